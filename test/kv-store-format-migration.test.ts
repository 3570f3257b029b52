// The example's key-value store, kept in luo.map (here in plain memory, as luo.map lays it
// out): the format migration (v2 adds revisions, v1 reopens a v2 store and gives the revisions
// back) keeps every entry and the checksum; the background verification is exact while writes
// go on, an index that grows meanwhile included; bad input is refused.
import assert from 'node:assert/strict';
import test from 'node:test';
import { KvStore, MAX_VALUE, StoreFullError, heapMaps, seed, seedEntry } from '../examples/kv/store.js';

test('format 1 → 2 → 1: entries and checksum kept, revisions counted in 2, the revisions given back by 1', () => {
  const maps = heapMaps();
  const s1 = KvStore.open(maps, 1, KvStore.capacityFor(4 * 2 ** 20));
  seed(s1, 10_000);
  const sum = s1.checksum;
  const s2 = KvStore.open(maps, 2);
  assert.equal(s2.format, 2);
  assert.deepEqual(s2.migrated, { from: 1, to: 2 });
  assert.equal(s2.checksum, sum, 'the migration does not touch the entries');
  assert.equal(s2.put(Buffer.from('key:7'), Buffer.from('new')), 1);
  assert.equal(s2.put(Buffer.from('key:7'), Buffer.from('newer')), 2);
  assert.equal(s2.get(Buffer.from('key:7'))!.rev, 2);
  const back = KvStore.open(maps, 2);
  assert.equal(back.migrated, null);
  assert.equal(back.get(Buffer.from('key:7'))!.rev, 2, 'revisions survive a reopen');
  const withRevs = maps.mem.bytes;
  const s1b = KvStore.open(maps, 1);
  assert.equal(s1b.format, 1);
  assert.deepEqual(s1b.migrated, { from: 2, to: 1 });
  assert.ok(maps.mem.bytes < withRevs, 'the revisions map was given back');
  assert.equal(s1b.get(Buffer.from('key:7'))!.value.toString(), 'newer');
  assert.equal(s1b.get(Buffer.from('key:7'))!.rev, 0);
  for (let i = 0; i < 10_000; i += 997) {
    const [k, v] = seedEntry(i);
    if (i !== 7) assert.deepEqual(s1b.get(k)!.value, v);
  }
  assert.equal(s1b.size, 10_000);
  const s2b = KvStore.open(maps, 2);
  assert.equal(s2b.get(Buffer.from('key:7'))!.rev, 0, 'format 2 again: revisions start afresh');
});

test('verify() recomputes the checksum exactly while writes land before and after its cursor', async () => {
  const s = KvStore.open(heapMaps(), 1, KvStore.capacityFor(8 * 2 ** 20));
  seed(s, 30_000);
  const before = s.checksum;
  const running = s.verify(4096);
  for (let i = 0; i < 200; i++) {
    s.put(Buffer.from(`key:${(i * 7919) % 30_000}`), Buffer.from(`changed ${i}`));
    if (i % 3 === 0) s.delete(Buffer.from(`key:${(i * 104729) % 30_000}`));
    s.put(Buffer.from(`fresh:${i}`), Buffer.from('x'));
    await new Promise((r) => setImmediate(r));
  }
  const v = await running;
  assert.equal(v.expected, before);
  assert.equal(v.computed, before, 'the scan accounts for every write made while it ran');
  assert.equal(v.ok, true);
  // Called when the state is handed over, scanning later: writes in between count too.
  const handedOver = s.checksum;
  const late = s.verify(4096, 30);
  s.put(Buffer.from('key:1'), Buffer.from('during the delay'));
  const lv = await late;
  assert.deepEqual([lv.expected, lv.computed, lv.ok], [handedOver, handedOver, true]);
  const again = await s.verify();
  assert.equal(again.ok, true);
  assert.notEqual(again.computed, before);
});

test('verify() starts again, exact, when the index grows under it', async () => {
  const s = KvStore.open(heapMaps(), 1, KvStore.capacityFor(64 * 2 ** 20));
  seed(s, 40_000);
  const running = s.verify(512);
  for (let i = 0; i < 60_000; i++) s.put(Buffer.from(`grow:${i}`), Buffer.from('y')); // the index doubles
  const v = await running;
  assert.equal(v.ok, true, `${v.computed} vs ${v.expected}`);
  assert.equal(v.expected, s.checksum, 'the checksum when it started again');
});

test('a byte changed behind the store\'s back fails verification', async () => {
  const maps = heapMaps();
  const s = KvStore.open(maps, 1, KvStore.capacityFor(2 ** 20));
  seed(s, 1000);
  assert.equal((await s.verify()).ok, true);
  // The "kv" map's first segment, from its header (uapi/state.ts: segment 0's address at 64).
  const kv = maps.map('kv', { version: 1 });
  const head = maps.mem.view(kv.address, 4096);
  const seg0 = new Float64Array(head.buffer, head.byteOffset + 64, 2);
  const seg = maps.mem.view(seg0[0]!, seg0[1]!);
  seg[16 + 16 + 3]! ^= 0xff; // a byte of the first entry's key
  assert.equal((await s.verify()).ok, false);
});

test('bad input: oversized keys and values, a full store, no store, an unknown format', () => {
  const maps = heapMaps();
  const s = KvStore.open(maps, 1, 16);
  assert.throws(() => s.put(Buffer.alloc(33, 1), Buffer.from('v')), RangeError);
  assert.throws(() => s.put(Buffer.alloc(0), Buffer.from('v')), RangeError);
  assert.throws(() => s.put(Buffer.from('k'), Buffer.alloc(MAX_VALUE + 1)), /value must be at most 88 bytes/);
  for (let i = 0; i < 14; i++) s.put(Buffer.from(`k${i}`), Buffer.from('v'));
  assert.throws(() => s.put(Buffer.from('one more'), Buffer.from('v')), StoreFullError);
  s.put(Buffer.from('k3'), Buffer.from('overwrite is fine when full'));
  assert.throws(() => KvStore.open(heapMaps(), 1), /no key-value store here/);
  assert.throws(() => KvStore.open(heapMaps(), 1, 3), /capacity must be an integer of at least 16/);
  maps.map('kv', { version: 1 }).version = 9;
  assert.throws(() => KvStore.open(maps, 2), (e: Error & { code?: string }) => e.code === 'EPROTO' && /version 9/.test(e.message));
});
