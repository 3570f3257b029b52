// A view kept after its mapping is gone can never kill the process: it reads zeros, and the
// mapping refuses new views. (A raw munmap would make the read below a SIGSEGV.)
import assert from 'node:assert/strict';
import test from 'node:test';
import * as sys from '../src/sys/index.js';

test('views outlive unmap safely; new views are refused with EBADF', () => {
  const fd = sys.memfdCreate('m');
  sys.ftruncate(fd, 1 << 20);
  const m = sys.Mapping.map(fd, 1 << 20);
  const v = m.bytes(4096, 16);
  v.fill(0xab);
  const w = m.bytes(0, 1 << 20);
  assert.equal(w[4096], 0xab, 'views share the file');
  m.unmap();
  assert.equal(m.mapped, false);
  assert.equal(v[0], 0, 'a stale view reads zeros instead of faulting');
  v[1] = 7; // writes go to private memory, not the file
  assert.throws(() => m.bytes(0, 1), { code: 'EBADF' });
  m.unmap(); // idempotent
  const again = sys.Mapping.map(fd, 1 << 20);
  assert.equal(again.bytes(4096, 2)[0], 0xab, 'the file kept its bytes');
  assert.equal(again.bytes(4096, 2)[1], 0xab, 'the stale write did not reach the file');
  sys.close(fd);
});

test('views are bounds-checked and capped at 4 GiB', () => {
  const fd = sys.memfdCreate('big');
  sys.ftruncate(fd, 8 * 2 ** 30);
  const m = sys.Mapping.map(fd, 8 * 2 ** 30);
  assert.throws(() => m.bytes(8 * 2 ** 30 - 1, 2), { code: 'EFAULT' });
  assert.throws(() => m.bytes(0, 4 * 2 ** 30 + 4096), { code: 'E2BIG' });
  const straddle = m.bytes(2 ** 30 - 2, 4); // crosses a cached window
  straddle.set([1, 2, 3, 4]);
  assert.deepEqual([...m.bytes(2 ** 30, 2)], [3, 4]);
  m.unmap();
  sys.close(fd);
});
