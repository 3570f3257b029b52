// luo.map in one process, against a JS Map as the model: get, set, has, delete, size,
// iteration and clear agree after any sequence of operations (fast-check), with string, two-byte
// and byte keys and every kind of value; deleted space is reused; bad input is refused with its
// errno and changes nothing.
import assert from 'node:assert/strict';
import test from 'node:test';
import fc from 'fast-check';
import { boot, LuoError } from '../src/index.js';
import { tmpDir } from './helpers.js';

const luo = boot({ name: 'state-ops', rundir: tmpDir() });

const keyArb = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'grapheme', maxLength: 6 }),
  fc.uint8Array({ maxLength: 8 }),
);
const valueArb = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.double({ noNaN: true }),
  fc.uint8Array({ maxLength: 600 }),
  fc.jsonValue({ maxDepth: 2 }),
  fc.constant(undefined),
  fc.string({ minLength: 3000, maxLength: 9000 }),
);
const opArb = fc.oneof(
  fc.record({ op: fc.constant('set' as const), k: keyArb, v: valueArb }),
  fc.record({ op: fc.constant('delete' as const), k: keyArb }),
  fc.record({ op: fc.constant('get' as const), k: keyArb }),
  fc.record({ op: fc.constant('clear' as const) }),
);
/** The model's key: strings as themselves, bytes as a tagged hex string (they are distinct). */
const mk = (k: string | Uint8Array): string => (typeof k === 'string' ? `s${k}` : `b${Buffer.from(k).toString('hex')}`);
/** A value as it reads back: JSON values through JSON (-0 becomes 0 there). */
const norm = (v: unknown): unknown => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : typeof v === 'number' || typeof v === 'string' || v === undefined ? v : JSON.parse(JSON.stringify(v)));

test('a preserved map agrees with a JS Map after any sequence of operations', () => {
  let n = 0;
  fc.assert(fc.property(fc.array(opArb, { maxLength: 120 }), (ops) => {
    const m = luo.map(`fuzz${n}`, { cache: n++ % 2 === 0 ? 8 : false }); // half with a small read cache
    const model = new Map<string, { k: string | Uint8Array; v: unknown }>();
    for (const o of ops) {
      if (o.op === 'set') {
        m.set(o.k, o.v);
        model.set(mk(o.k), { k: o.k, v: o.v });
      } else if (o.op === 'delete') assert.equal(m.delete(o.k), model.delete(mk(o.k)));
      else if (o.op === 'get') {
        assert.equal(m.has(o.k), model.has(mk(o.k)));
        assert.deepEqual(norm(m.get(o.k)), norm(model.get(mk(o.k))?.v));
      } else {
        m.clear();
        model.clear();
      }
      assert.equal(m.size, model.size);
    }
    const got = new Map([...m].map(([k, v]) => [mk(k), norm(v)]));
    assert.deepEqual(got, new Map([...model].map(([k, e]) => [k, norm(e.v)])));
    m.destroy();
  }), { numRuns: 300 });
});

test('deleted and outgrown space is reused; growth keeps every entry', () => {
  const m = luo.map('reuse');
  for (let i = 0; i < 50_000; i++) m.set(`key-${i}`, 'v'.repeat(100));
  const full = m.stats();
  for (let i = 0; i < 50_000; i += 2) m.delete(`key-${i}`);
  assert.equal(m.stats().bytesFree, full.bytesUsed / 2, 'the deleted entries wait for reuse');
  for (let i = 0; i < 50_000; i += 2) m.set(`kez-${i}`, 'w'.repeat(100));
  const after = m.stats();
  assert.equal(after.bytesAllocated, full.bytesAllocated, 'same-size entries reuse the deleted ones: no new memory');
  assert.equal(after.bytesFree, 0);
  // Overwrites with larger values move the entry; the value reads back whole.
  for (let i = 1; i < 50_000; i += 2) m.set(`key-${i}`, 'L'.repeat(1000 + i % 7));
  for (let i = 1; i < 50_000; i += 2) assert.equal(m.get(`key-${i}`), 'L'.repeat(1000 + i % 7));
  for (let i = 0; i < 50_000; i += 2) assert.equal(m.get(`kez-${i}`), 'w'.repeat(100));
  assert.equal(m.size, 50_000);
  assert.ok(m.stats().indexSlots >= 65_536);
});

test('a map filled from another map\'s iteration (hash order) keeps its probe runs short', { timeout: 120_000 }, () => {
  // 3 000 000 entries: the source's index (4 Mi slots) is bigger than the copy's while it fills.
  // With one hash function for both, keys arrive in the copy's hash order and linear probing
  // clusters them (a run of 135 000 slots, minutes to fill); each map has its own seed.
  const a = luo.map('probe-a');
  for (let i = 0; i < 3_000_000; i++) a.set(Buffer.from(`key:${i}`), 1);
  const b = luo.map('probe-b');
  for (const [k, v] of a) b.set(k, v);
  assert.equal(b.size, 3_000_000);
  assert.ok(b.maxProbe() < 500, `longest probe ${b.maxProbe()}`);
  luo.forget('probe-a');
  luo.forget('probe-b');
});

test('a read cache answers as the map does, and a refused write leaves both unchanged', () => {
  const m = luo.map('cached', { cache: true });
  m.set('a', 'one');
  assert.equal(m.get('a'), 'one');
  m.freeze(); // what FREEZE does: writes refused
  assert.throws(() => m.set('a', 'two'), { code: 'EBUSY' });
  assert.throws(() => m.delete('a'), { code: 'EBUSY' });
  assert.equal(m.get('a'), 'one', 'the cache did not take the refused write');
  m.thaw();
  m.set('a', { x: 1 });
  assert.deepEqual(m.get('a'), { x: 1 }, 'an object is never cached (a caller could change it)');
  m.set('a', 'three');
  m.delete('a');
  assert.equal(m.get('a'), undefined);
  assert.equal(m.has('a'), false);
});

test('bad input is refused with its errno, and the map is unchanged', () => {
  const m = luo.map('bad');
  m.set('a', 1);
  const code = (f: () => unknown): string => {
    try {
      f();
      return 'none';
    } catch (e) {
      return (e as LuoError).code;
    }
  };
  assert.equal(code(() => m.set(42 as unknown as string, 1)), 'EINVAL', 'a number key');
  assert.equal(code(() => m.get({} as unknown as string)), 'EINVAL');
  assert.equal(code(() => m.set('b', 10n)), 'EINVAL', 'a bigint value');
  assert.equal(code(() => m.set('b', () => 1)), 'EINVAL', 'a function value');
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.equal(code(() => m.set('b', cyclic)), 'EINVAL');
  assert.equal(code(() => luo.map('no/slash')), 'EINVAL', 'a name outside the alphabet');
  assert.equal(code(() => luo.map('v0', { version: 0 })), 'EINVAL');
  assert.equal(code(() => luo.keep('bad', {} as never)), 'EINVAL');
  assert.equal(code(() => luo.keep('a-keep', { save: () => 1, load: () => {} })), 'none');
  assert.equal(code(() => luo.map('a-keep')), 'EEXIST', 'a kept value is not a map');
  assert.equal(luo.map('bad'), m, 'the same name, the same map');
  assert.deepEqual([...m], [['a', 1]]);
  assert.equal(luo.forget('bad'), true, 'forget: the map and its memory go');
  assert.throws(() => m.get('a'), { code: 'EBADF' });
  assert.throws(() => m.set('a', 2), { code: 'EBADF' });
  assert.equal(luo.map('bad').size, 0, 'the name again: a new, empty map');
  assert.equal(luo.forget('never-was'), false);
});
