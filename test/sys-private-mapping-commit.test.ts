// A private (copy-on-write) mapping of a memfd: exactly the pages this process wrote are found
// in /proc/self/pagemap (pages only read are not), and commitTo writes those back into the file
// and maps it shared at the same address. This is what an update's FINISH does with the arena.
import assert from 'node:assert/strict';
import test from 'node:test';
import * as sys from '../src/sys/index.js';

const PAGE = 4096;

test('writtenPages finds exactly the written pages; commitTo writes them back, shared after', () => {
  const size = 64 * PAGE;
  const fd = sys.memfdCreate('cow');
  sys.ftruncate(fd, size);
  const shared = sys.Mapping.map(fd, size);
  shared.bytes(0, size).fill(1);

  const priv = sys.Mapping.map(fd, size, 0, { private: true });
  assert.equal(priv.isPrivate, true);
  const view = priv.bytes(0, size);
  assert.equal(view[5 * PAGE], 1, 'the file shows through until a page is written');
  let sum = 0;
  for (let p = 0; p < 64; p += 3) sum += view[p * PAGE + 7]!; // read, never written
  assert.ok(sum > 0);
  for (const p of [2, 3, 4, 10, 63]) view[p * PAGE + 100] = 9;
  assert.equal(shared.bytes(2 * PAGE + 100, 1)[0], 1, 'private writes do not reach the file');

  const base = priv.address;
  const open = sys.openFds().length;
  assert.deepEqual(sys.writtenPages(base, size), [[2 * PAGE, 3 * PAGE], [10 * PAGE, PAGE], [63 * PAGE, PAGE]]);
  assert.deepEqual(sys.writtenPages(base + BigInt(3 * PAGE), 2 * PAGE), [[0, 2 * PAGE]], 'a sub-range, offsets from its start');
  assert.equal(sys.openFds().length, open, 'a scan leaves no fd open (each image after the first would hold one more)');

  const back = priv.commitTo(fd, [[0, size]]);
  assert.equal(back, 5 * PAGE, 'five pages written back');
  assert.equal(priv.isPrivate, false);
  for (const p of [2, 3, 4, 10, 63]) assert.equal(shared.bytes(p * PAGE + 100, 1)[0], 9, `page ${p} reached the file`);
  assert.equal(shared.bytes(5 * PAGE + 100, 1)[0], 1, 'an unwritten page is as it was');
  view[20 * PAGE] = 4;
  assert.equal(shared.bytes(20 * PAGE, 1)[0], 4, 'after commit the mapping is shared');
  priv.unmap();
  shared.unmap();
  sys.close(fd);
});
