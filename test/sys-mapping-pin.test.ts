// Mapping.pin (sys/mapping.ts): a range viewed ahead. V8 counts every external buffer's bytes
// and collects when that count grows; after a pin, views inside the range are slices of it
// and add nothing to the count, so a successor that pins before its handover makes no
// collection happen in the pause. Views outside a pin are made as before.
import assert from 'node:assert/strict';
import test from 'node:test';
import v8 from 'node:v8';
import * as sys from '../src/sys/index.js';

const external = (): number => v8.getHeapStatistics().external_memory;
const MiB = 2 ** 20;

test('views inside a pinned range are slices: V8 counts the range once, and nothing more', () => {
  const fd = sys.memfdCreate('pin-test');
  sys.ftruncate(fd, 1024 * MiB);
  const m = sys.Mapping.map(fd, 1024 * MiB);
  try {
    const e0 = external();
    m.pin(0, 256 * MiB);
    const e1 = external();
    assert.ok(e1 - e0 >= 250 * MiB, `the pin is counted once (${(e1 - e0) / MiB} MiB)`);
    assert.equal(m.pinnedBytes, 256 * MiB);
    const small = m.bytes(4096, 100);
    const big = m.bytes(8 * MiB, 200 * MiB);
    const straddling = m.bytes(31 * MiB, 2 * MiB); // across two 32 MiB windows
    assert.ok(external() - e1 < MiB, `views inside add nothing (${(external() - e1) / MiB} MiB)`);
    // They are the mapping's bytes: what one writes, the others read.
    big[0] = 7;
    assert.equal(m.bytes(8 * MiB, 1)[0], 7);
    small[99] = 9;
    assert.equal(m.bytes(4096 + 99, 1)[0], 9);
    straddling[MiB] = 5;
    assert.equal(m.bytes(32 * MiB, 1)[0], 5);
    // Outside the pin: a window of its own, counted as before.
    const e2 = external();
    m.bytes(600 * MiB, 10);
    assert.ok(external() - e2 >= 30 * MiB);
    m.pin(0, 256 * MiB); // idempotent
    assert.equal(m.pinnedBytes, 256 * MiB);
    assert.throws(() => m.pin(1000 * MiB, 100 * MiB), { code: 'EFAULT' });
    m.unmap();
    assert.throws(() => m.pin(0, 4096), { code: 'EBADF' });
    assert.equal(big[0], 0, 'a pinned view outlives unmap as zeros, like any view');
  } finally {
    sys.close(fd);
  }
});
