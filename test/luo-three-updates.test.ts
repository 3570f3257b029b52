// Three live updates in a row through three images (what v3 lacked and v4+ tested as
// luo_multi_kexec): each image restores the files and memory the previous one preserved,
// FINISHes, and preserves fresh ones for the next.
import assert from 'node:assert/strict';
import test from 'node:test';
import { imagePath, jsonLines, runNode, tmpDir } from './helpers.js';

test('three live updates in a row through three images, preserving and restoring files each time', async () => {
  const r = await runNode(imagePath('luo-chain-1'), [], { env: { ...process.env, CHAIN_LEFT: '3', LUO_RUNDIR: tmpDir() } });
  assert.equal(r.code, 0, r.stderr);
  const gens = jsonLines(r.stdout);
  assert.equal(gens.length, 4, r.stdout);
  assert.deepEqual(gens.map((g) => g.version), [1, 2, 3, 1]);
  assert.deepEqual(gens.map((g) => g.state), ['normal', 'updated', 'updated', 'updated']);
  assert.deepEqual(gens.map((g) => g.number), [0, 1, 2, 3], 'liveupdate-number counts the updates');
  assert.ok(gens.every((g) => g.pid === gens[0]!.pid), 'same pid throughout');
  for (const [i, g] of gens.slice(1).entries()) {
    const prev = [1, 2, 3][i];
    assert.equal(g.memoryIntact, true);
    assert.equal(g.memfdText, `hello from version ${prev}`, 'memfd contents and position survive');
    assert.equal(g.memfdAtPosition, `from version ${prev}`, 'the memfd\'s file position survives');
    assert.equal(g.memfdCloexec, true, 'a restored fd is close-on-exec');
    assert.equal(g.pipeText, `pipe from version ${prev}`, 'bytes in a pipe survive');
    assert.deepEqual(g.incomingTokens, ['10', '11', '12']);
    assert.equal(g.secondRestore, 'EINVAL', 'a token restores once');
    assert.equal(g.afterFinish, 'normal');
  }
  const fds = gens.slice(1).map((g) => g.openFds);
  assert.equal(new Set(fds).size, 1, `no fd leaks across updates: ${fds}: ${JSON.stringify(gens.slice(1).map((g) => g.fdTargets))}`);
});
