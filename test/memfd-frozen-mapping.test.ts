// memfd-v1 (reference §7): from PREPARE until CANCEL the mapping is frozen: through luo any
// size change, write past the end or fallocate is EPERM; reads, in-bounds writes and existing
// mappings keep working. CANCEL unfreezes.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Memfd, State } from '../src/index.js';
import * as sys from '../src/sys/index.js';
import { code, mkLuo } from './luo-helpers.js';

test('PREPARE freezes the mapping (EPERM for size changes, writes past the end, fallocate); CANCEL unfreezes', async () => {
  const luo = mkLuo();
  const m = Memfd.create('frozen', 8192);
  const view = m.view();
  m.write(Buffer.from('hello'), 0);
  luo.preserveFile(1, m);
  assert.equal(luo.files.describeOutgoing()[0]!.compatible, 'memfd-v1');
  await luo.prepare();
  assert.equal(m.frozen, true);
  assert.equal(await code(() => m.truncate(16384)), 'EPERM', 'grow');
  assert.equal(await code(() => m.truncate(4096)), 'EPERM', 'shrink');
  assert.equal(await code(() => m.truncate(8192)), 'EPERM', 'even to the same size');
  assert.equal(await code(() => m.write(Buffer.alloc(10), 8190)), 'EPERM', 'a write reaching past the end');
  assert.equal(await code(() => m.allocate(0, 4096)), 'EPERM');
  assert.equal(await code(() => m.punchHole(0, 4096)), 'EPERM');
  const e = await Promise.resolve().then(() => m.truncate(1)).catch((x) => x);
  assert.match(e.message, /preserved for a live update/);
  m.write(Buffer.from('HELLO'), 0); // in bounds: fine
  const back = Buffer.alloc(5);
  m.read(back, 0);
  assert.equal(back.toString(), 'HELLO');
  assert.equal(Buffer.from(view.subarray(0, 5)).toString(), 'HELLO', 'an existing mapping keeps working');
  assert.equal(m.size, 8192);
  await luo.cancel();
  assert.equal(luo.state, State.NORMAL);
  assert.equal(m.frozen, false);
  m.truncate(16384);
  m.write(Buffer.alloc(10), 16380);
  m.punchHole(0, 4096);
  assert.equal(m.size, 16390);
});

test('a raw memfd fd is preserved with memfd-v1 too (luo keeps its own reference)', async () => {
  const luo = mkLuo();
  const fd = sys.memfdCreate('raw');
  luo.preserveFile(2, fd);
  sys.close(fd);
  assert.equal(luo.files.describeOutgoing()[0]!.compatible, 'memfd-v1');
  await luo.prepare();
  await luo.cancel();
  await luo.unpreserveFile(2);
});
