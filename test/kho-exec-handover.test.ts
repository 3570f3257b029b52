// KHO across a real execve: image A preserves memory and subtrees, execs image B (another
// script) in the same pid; B sees every byte, both subtrees, and only preserved memory.
import assert from 'node:assert/strict';
import test from 'node:test';
import { imagePath, jsonLines, runNode } from './helpers.js';

test('preserved memory and subtrees survive an in-place exec into a different script', async () => {
  const r = await runNode(imagePath('kho-a'));
  assert.equal(r.code, 0, r.stderr);
  const [a, b] = jsonLines(r.stdout);
  assert.ok(a && b, r.stdout);
  assert.equal(b.pid, a.pid, 'same pid after exec');
  assert.equal(b.bootedFrom, 'handover');
  assert.equal(b.handoverEnvGone, true, 'LUO_HANDOVER is removed from the environment at boot');
  assert.deepEqual(b.bad, [], 'every preserved byte is intact');
  assert.equal(b.one, 'test-one-v1');
  assert.deepEqual(b.two, ['test-two-v1', 'test-generic']);
  assert.equal(b.twoChild, 0xdeadbeef);
  assert.equal(b.folioOrder, 3);
  assert.equal(b.missing, 'ENOENT');
  assert.equal(b.freshOverlaps, false, 'the allocator never hands out a handed-over page');
  // A held preserved memory + 16 MiB of scratch; B holds only what was preserved.
  const before = a.allocatedBefore as number;
  const after = b.allocatedAfter as number;
  const preserved = a.preserved as number;
  assert.ok(before >= preserved + 16 * 2 ** 20, `A held ${before}`);
  assert.ok(after >= preserved && after < preserved + 2 * 2 ** 20, `B holds ${after}, preserved ${preserved}`);
});
