// libc failures become SysError carrying the errno name and the call.
import assert from 'node:assert/strict';
import test from 'node:test';
import { SysError } from '../src/errors.js';
import * as sys from '../src/sys/index.js';

test('a failing libc call raises SysError with errno name, number and call', () => {
  assert.throws(() => sys.close(-1), (e: unknown) => e instanceof SysError && e.code === 'EBADF' && e.errno === 9 && e.syscall === 'close');
  assert.throws(() => sys.getFdFlags(123456), { code: 'EBADF', syscall: 'fcntl(F_GETFD)' });
  assert.throws(() => sys.ftruncate(0x7fffffff, 10), { code: 'EBADF', syscall: 'ftruncate' });
  assert.throws(() => sys.fstat(123456), { code: 'EBADF', syscall: 'fstat' });
  assert.throws(() => sys.waitpid(999999, sys.WNOHANG), { code: 'ECHILD', syscall: 'waitpid' });
  assert.throws(() => sys.Mapping.map(123456, 4096), { code: 'EBADF', syscall: 'mmap' });
});

test('memfd: size, sparse allocation, hole punching, seals, dup and cloexec', () => {
  const fd = sys.memfdCreate('t', sys.MFD_CLOEXEC | sys.MFD_ALLOW_SEALING);
  try {
    assert.equal(sys.isCloexec(fd), true);
    sys.ftruncate(fd, 8 << 20);
    assert.equal(sys.fstat(fd).size, 8 << 20);
    assert.equal(sys.fstat(fd).allocated, 0, 'sparse until touched');
    sys.fallocate(fd, 0, 0, 1 << 20);
    assert.ok(sys.fstat(fd).allocated >= 1 << 20);
    sys.punchHole(fd, 0, 1 << 20);
    assert.equal(sys.fstat(fd).allocated, 0);
    sys.addSeals(fd, sys.F_SEAL_GROW);
    assert.equal(sys.getSeals(fd) & sys.F_SEAL_GROW, sys.F_SEAL_GROW);
    assert.throws(() => sys.ftruncate(fd, 16 << 20), { code: 'EPERM', syscall: 'ftruncate' });
    const d = sys.dup(fd);
    assert.equal(sys.isCloexec(d), true, 'dup sets FD_CLOEXEC');
    sys.setCloexec(d, false);
    assert.equal(sys.isCloexec(d), false);
    sys.close(d);
    assert.throws(() => sys.close(d), { code: 'EBADF' });
    assert.match(sys.fdTarget(fd), /^\/memfd:t/);
  } finally {
    sys.close(fd);
  }
});
