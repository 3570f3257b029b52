// An exec carries exactly stdio, the arena and the registered fds; a failed exec leaves the
// image as it was; children inherited from the previous image are reaped.
import assert from 'node:assert/strict';
import test from 'node:test';
import { imagePath, jsonLines, runNode } from './helpers.js';

test('exec carries only stdio, the arena and registered fds; failure restores; children reaped', async () => {
  const r = await runNode(imagePath('exec-fds'));
  assert.equal(r.code, 0, r.stderr);
  const [one, two] = jsonLines(r.stdout) as [Record<string, any>, Record<string, any>];
  assert.equal(one.failed, 'ENOENT', 'exec of a missing program fails with ENOENT');
  assert.equal(one.droppedCloexecAfterFailure, false, 'flags put back after a failed exec');
  assert.equal(one.keptCloexecAfterFailure, true, 'flags put back after a failed exec');
  assert.equal(two.pid, one.pid);
  assert.equal(two.bootedFrom, 'handover');
  const targets = new Map<number, string>(two.fds);
  assert.match(targets.get(one.kept)!, /^\/memfd:kept/, 'the registered fd survives at the same number');
  assert.equal(targets.get(one.dropped), undefined, 'an fd opened without CLOEXEC is not carried');
  const memfds = [...targets.values()].filter((t) => t.startsWith('/memfd:'));
  assert.deepEqual(memfds.map((t) => t.replace(/ \(deleted\)$/, '')).sort(), ['/memfd:kept', '/memfd:luo-arena'].sort());
  for (const fd of [0, 1, 2]) assert.ok(targets.has(fd), `stdio ${fd} kept`);
  assert.deepEqual(two.zombies, [], 'no zombies left from the previous image');
  assert.deepEqual(two.childrenLeft, [], 'inherited children are reaped as they exit');
});
