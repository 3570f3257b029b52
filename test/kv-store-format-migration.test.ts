// The example's key-value store: the format migration (v2 adds revisions, v1 reopens a v2
// store and gives the revision block back) keeps every entry and the checksum; the
// background verification is exact while writes go on; bad input is refused.
import assert from 'node:assert/strict';
import test from 'node:test';
import { KvStore, MAX_VALUE, StoreFullError, heapMemory, seed, seedEntry, type StoreMemory } from '../examples/kv/store.js';

/** Heap memory that records what was claimed and released, as luo's would be. */
function tracked(): StoreMemory & { claimed: number[]; released: number[] } {
  const m = heapMemory();
  const claimed: number[] = [];
  const released: number[] = [];
  return { ...m, claimed, released, claim: (a) => (claimed.push(a), 0), release: (a) => void released.push(a) };
}

test('format 1 → 2 → 1: entries and checksum kept, revisions counted in 2, the revision block released by 1', () => {
  const mem = tracked();
  const s1 = KvStore.create(KvStore.capacityFor(4 * 2 ** 20), mem, 1);
  seed(s1, 10_000);
  const sum = s1.checksum;
  const s2 = KvStore.open(s1.rootAddr, mem, 2);
  assert.equal(s2.format, 1);
  s2.upgrade(mem);
  assert.equal(s2.format, 2);
  assert.equal(s2.checksum, sum, 'the migration does not touch the records');
  assert.equal(s2.put(Buffer.from('key:7'), Buffer.from('new')), 1);
  assert.equal(s2.put(Buffer.from('key:7'), Buffer.from('newer')), 2);
  assert.equal(s2.get(Buffer.from('key:7'))!.rev, 2);
  const blocks2 = s2.blocks().length;
  const back = KvStore.open(s2.rootAddr, mem, 2);
  assert.equal(back.get(Buffer.from('key:7'))!.rev, 2, 'revisions survive a reopen');
  mem.claimed.length = 0;
  const s1b = KvStore.open(s2.rootAddr, mem, 1);
  assert.equal(s1b.format, 1);
  assert.equal(mem.released.length, blocks2 - s1b.blocks().length, 'every revision block released');
  assert.equal(s1b.get(Buffer.from('key:7'))!.value.toString(), 'newer');
  assert.equal(s1b.get(Buffer.from('key:7'))!.rev, 0);
  for (let i = 0; i < 10_000; i += 997) {
    const [k, v] = seedEntry(i);
    if (i !== 7) assert.deepEqual(s1b.get(k)!.value, v);
  }
  assert.equal(s1b.size, 10_000);
});

test('verify() recomputes the checksum exactly while writes land before and after its cursor', async () => {
  const s = KvStore.create(KvStore.capacityFor(8 * 2 ** 20), heapMemory(), 1);
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

test('a byte changed behind the store\'s back fails verification', async () => {
  const mem = heapMemory();
  const s = KvStore.create(KvStore.capacityFor(2 ** 20), mem, 1);
  seed(s, 1000);
  const seg = s.blocks()[1]!;
  const view = mem.view(seg.addr, seg.size);
  const i = view.findIndex((b, j) => j % 128 === 0 && b === 1);
  view[i + 50]! ^= 0xff;
  assert.equal((await s.verify()).ok, false);
});

test('bad input: oversized keys and values, a full store, a wrong root, an unknown format', () => {
  const mem = heapMemory();
  const s = KvStore.create(16, mem, 1);
  assert.throws(() => s.put(Buffer.alloc(33, 1), Buffer.from('v')), RangeError);
  assert.throws(() => s.put(Buffer.alloc(0), Buffer.from('v')), RangeError);
  assert.throws(() => s.put(Buffer.from('k'), Buffer.alloc(MAX_VALUE + 1)), /value must be at most 88 bytes/);
  for (let i = 0; i < 14; i++) s.put(Buffer.from(`k${i}`), Buffer.from('v'));
  assert.throws(() => s.put(Buffer.from('one more'), Buffer.from('v')), StoreFullError);
  s.put(Buffer.from('k3'), Buffer.from('overwrite is fine when full'));
  assert.throws(() => KvStore.create(100_000_000, mem, 1), /whole number of 131072-record segments/);
  const other = mem.alloc(4096);
  assert.throws(() => KvStore.open(other, mem, 2), /no key-value store at/);
  s.root[4] = 9;
  assert.throws(() => KvStore.open(s.rootAddr, mem, 2), /format 9 is unknown to this code/);
});
