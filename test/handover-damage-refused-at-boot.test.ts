// Damage to a handover after the previous image wrote it, of a kind every structural check
// accepts (a flipped payload byte, a rewritten liveupdate-number, a flipped byte in a
// server's connections table), is caught by the checksums luo writes with each tree and
// table: the one-line fatal (exit 70) with no stack trace; or, with LUO_ON_CORRUPT=cold, a
// cold boot that closes everything the previous image carried first, so that the new image
// can listen on the same port itself.
import assert from 'node:assert/strict';
import test from 'node:test';
import { EXIT_PANIC } from '../src/index.js';
import { imagePath, jsonLines, runNode, tmpDir } from './helpers.js';

const run = (damage: string, cold = false) => runNode(imagePath('damaged-handover'), [], {
  env: { ...process.env, DAMAGE: damage, LUO_RUNDIR: tmpDir(), ...(cold ? { LUO_ON_CORRUPT: 'cold' } : {}) },
});

for (const [damage, what] of [['payload', 'a flipped payload byte'], ['number', 'a rewritten liveupdate-number']] as const) {
  test(`${what} in the LUO tree: the one-line fatal at boot`, async () => {
    const r = await run(damage);
    assert.equal(r.code, EXIT_PANIC, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.match(lines[0]!, /^luo: fatal: ERR_HANDOVER: subtree "LUO" was damaged after the previous image wrote it \(CRC-32 [0-9a-f]+, [0-9a-f]+ at finalize\)$/);
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  });

  test(`${what} in the LUO tree with LUO_ON_CORRUPT=cold: a cold boot, with nothing of the previous image left open`, async () => {
    const r = await run(damage, true);
    assert.equal(r.code, 0, r.stderr);
    const [out] = jsonLines(r.stdout);
    assert.deepEqual(out, { booted: 'normal', listened: 'ok', inherited: 0 });
    assert.match(r.stderr, /ignoring the LUO handover and booting NORMAL: ERR_HANDOVER: subtree "LUO" was damaged/);
  });
}

test('a flipped byte in a server\'s connections table: restoreServer stops the image with the one-line fatal, no stack trace', async () => {
  const r = await run('table');
  assert.equal(r.code, EXIT_PANIC, r.stderr);
  const fatal = r.stderr.trim().split('\n').filter((l) => l.startsWith('luo: fatal:'));
  assert.ok(fatal.length >= 1, r.stderr);
  for (const l of fatal) assert.match(l, /^luo: fatal: ERR_HANDOVER: file 0x1 \(server-v2\) retrieve: server-v2 token 1: the table's checksum is [0-9a-f]+, [0-9a-f]+ was written: it was damaged$/);
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  assert.equal(jsonLines(r.stdout).length, 0, 'never served from the damaged table');
});
