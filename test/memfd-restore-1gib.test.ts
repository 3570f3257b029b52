// A 1 GiB memfd crosses a live update: restored without copying (the same file), size and
// position kept, contents checked by sampling one page every 8 MiB.
import assert from 'node:assert/strict';
import test from 'node:test';
import { imagePath, jsonLines, runNode, tmpDir } from './helpers.js';

test('a 1 GiB memfd is restored with its size, position and (sampled) contents', { timeout: 60_000 }, async () => {
  const r = await runNode(imagePath('memfd-big'), [], { env: { ...process.env, LUO_RUNDIR: tmpDir() } });
  assert.equal(r.code, 0, r.stderr);
  const out = jsonLines(r.stdout)[0]!;
  assert.equal(out.size, 2 ** 30);
  assert.equal(out.samples, 128);
  assert.equal(out.bad, 0);
  assert.equal(out.positionKept, true, 'the file position (100) crossed too');
  assert.equal(out.frozen, false, 'the restored memfd is not frozen');
});
