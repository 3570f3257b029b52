// The successor's delta at the freeze (src/handover/successor.ts, earlyDelta): of the fds
// carried, send only those the successor does not hold under the same key, each number once,
// and name the early copies not carried after all. Checked against a plain model on random
// inputs, call after call (its marks are scratch memory reused between calls), with and
// without the flat arrays a server vouches with, and with fd numbers beyond 65 535.
import assert from 'node:assert/strict';
import test from 'node:test';
import fc from 'fast-check';
import { earlyDelta, type FdRef } from '../src/handover/successor.js';

interface Case { refs: FdRef[]; early: Map<object, { fd: number; index: number }>; count: number; same: Uint8Array; earlyFds: number[] }

/** The delta as the header says it: every fd once; kept when its key was sent with that fd. */
function model(c: Case): { send: number[]; closed: number[] } {
  const kept = new Set<number>();
  const seen = new Set<number>();
  const send: number[] = [];
  for (const r of c.refs) {
    if (seen.has(r.fd)) continue;
    seen.add(r.fd);
    const e = r.key ? c.early.get(r.key) : undefined;
    if (e && e.fd === r.fd && !kept.has(e.index)) kept.add(e.index);
    else send.push(r.fd);
  }
  return { send, closed: Array.from({ length: c.count }, (_, i) => i).filter((i) => !kept.has(i)) };
}

const arbCase = fc.record({
  earlyFds: fc.uniqueArray(fc.integer({ min: 3, max: 70_000 }), { maxLength: 40 }),
  picks: fc.array(fc.record({ kind: fc.constantFrom('early', 'reused', 'new', 'again'), at: fc.nat(), fd: fc.integer({ min: 3, max: 70_000 }) }), { maxLength: 60 }),
}).map(({ earlyFds, picks }): Case => {
  const keys = earlyFds.map(() => ({}));
  const early = new Map(earlyFds.map((fd, index) => [keys[index]!, { fd, index }] as [object, { fd: number; index: number }]));
  const refs: FdRef[] = [];
  const same: number[] = [];
  for (const p of picks) {
    if (p.kind === 'early' && earlyFds.length) {
      // The very fd sent early, under its key: a handler may vouch for it.
      const i = p.at % earlyFds.length;
      refs.push({ fd: earlyFds[i]!, key: keys[i]!, stream: true });
      same.push(1);
    } else if (p.kind === 'reused' && earlyFds.length) {
      // An early key whose number now names another file (closed and reused, or moved).
      const i = p.at % earlyFds.length;
      refs.push({ fd: p.fd, key: keys[i]!, stream: true });
      same.push(0);
    } else if (p.kind === 'again' && refs.length) {
      // Two tokens carrying the same fd.
      const r = refs[p.at % refs.length]!;
      refs.push({ ...r });
      same.push(same[p.at % refs.length]!);
    } else {
      refs.push({ fd: p.fd, key: {}, stream: true });
      same.push(0);
    }
  }
  return { refs, early, count: earlyFds.length, same: Uint8Array.from(same), earlyFds };
});

test('earlyDelta sends what the successor lacks, each fd once, call after call', () => {
  fc.assert(fc.property(fc.array(arbCase, { minLength: 1, maxLength: 4 }), (cases) => {
    for (const c of cases) assert.deepEqual(earlyDelta(c.refs, c.early, c.count), model(c));
  }), { numRuns: 300 });
});

test('earlyDelta with the flat arrays a server vouches with gives the same delta', () => {
  fc.assert(fc.property(fc.array(arbCase, { minLength: 1, maxLength: 4 }), (cases) => {
    for (const c of cases) {
      let max = 0;
      for (const fd of c.earlyFds) max = Math.max(max, fd);
      const earlyIndexOfFd = new Int32Array(max + 1).fill(-1);
      c.earlyFds.forEach((fd, i) => (earlyIndexOfFd[fd] = i));
      const flat = { fds: Int32Array.from(c.refs.map((r) => r.fd)), same: c.same, earlyIndexOfFd };
      assert.deepEqual(earlyDelta(c.refs, c.early, c.count, flat), model(c));
    }
  }), { numRuns: 300 });
});
