// The successor handover link (src/kho/successor.ts) between images of different luo versions,
// and against malformed input. Files are told apart by their inode: the test checks the
// successor got the same open files under the numbers the protocol says.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import test from 'node:test';
import fc from 'fast-check';
import { HandoverError } from '../src/errors.js';
import { Successor, receiveHandover, type FdRef } from '../src/handover/successor.js';
import * as sys from '../src/sys/index.js';
import { files, ino, peer } from './peer.js';

test('a successor from before presend-v1 is sent nothing early, and gets every fd in handover-v1', { timeout: 30_000 }, async () => {
  const fds = files(4);
  const { next, report } = peer('v1');
  try {
    await next.ready(10_000);
    assert.equal(next.acceptsPresend, false);
    await assert.rejects(next.presend(fds.map((fd) => ({ fd, key: {} })), { arenaFd: fds[0]!, regions: [] }, 5000), { code: 'EPROTO' });
    next.handover(`kho-v1:${fds[0]}:0x1000:64`, fds.map((fd) => ({ fd, key: null })), 10_000);
    const r = await report();
    assert.equal(r.luo, 'handover-v1');
    assert.deepEqual(r.map, fds.map((fd) => [fd, ino(fd)]));
  } finally {
    next.abort();
    fds.forEach((fd) => fs.closeSync(fd));
  }
});

test('fds sent early are not sent again; what changed travels at the handover, and stale early copies are closed', { timeout: 30_000 }, async () => {
  const f = files(7);
  const k = f.map(() => ({}));
  const { next, report } = peer('v2');
  try {
    await next.ready(10_000);
    assert.equal(next.acceptsPresend, true);
    await next.presend(f.slice(0, 5).map((fd, i) => ({ fd, key: k[i]! })), { arenaFd: f[0]!, regions: [[4096, 4096]] }, 10_000);
    // Since then: f2 closed; the key of f3 now names another fd (f5); f4 lost its key; f6 is new.
    const final: FdRef[] = [{ fd: f[0]!, key: k[0]! }, { fd: f[1]!, key: k[1]! }, { fd: f[5]!, key: k[3]! }, { fd: f[4]!, key: null }, { fd: f[6]!, key: null }];
    next.handover(`kho-v1:${f[0]}:0x1000:64`, final, 10_000);
    const r = await report();
    const want = [f[0], f[1], f[4], f[5], f[6]].map((fd) => [fd!, ino(fd!)]).sort((a, b) => a[0]! - b[0]!);
    assert.deepEqual(r.map, want, 'the successor maps exactly the final fds, to the same files');
    assert.equal(r.early, 5);
    assert.equal(r.closedEarly, 3, 'the early copies of f2, f3 and f4 are dropped');
    assert.equal(r.closedEarlyStillOpen, 0);
  } finally {
    next.abort();
    f.forEach((fd) => fs.closeSync(fd));
  }
});

test('ahead-v1: the successor reads the regions named before the freeze and says how many; one from before it is never asked', { timeout: 30_000 }, async () => {
  const f = files(3);
  const k = f.map(() => ({}));
  const { next, report } = peer('v2');
  try {
    await next.ready(10_000);
    assert.equal(next.acceptsAhead, true);
    await next.presend(f.map((fd, i) => ({ fd, key: k[i]! })), { arenaFd: f[0]!, regions: [] }, 10_000);
    assert.equal(await next.ahead([[8192, 400], [65536, 16]], 10_000), 1, 'it read one of the two (the peer reads the first only)');
    next.handover(`kho-v1:${f[0]}:0x1000:64`, f.map((fd, i) => ({ fd, key: k[i]! })), 10_000);
    const r = await report();
    assert.deepEqual(r.ahead, [[8192, 400], [65536, 16]]);
  } finally {
    next.abort();
    f.forEach((fd) => fs.closeSync(fd));
  }
  const old = peer('v1');
  try {
    await old.next.ready(10_000);
    assert.equal(old.next.acceptsAhead, false);
    await assert.rejects(old.next.ahead([[8192, 400]], 5000), { code: 'EPROTO' });
  } finally {
    old.next.abort();
  }
});

test('a successor prepares in SCHED_IDLE where it can be given its class back, and has it back by the handover', { timeout: 30_000 }, async () => {
  // Given back: CAP_SYS_NICE (root, as in CI) or an RLIMIT_NICE that allows it; otherwise it
  // is never put there (it must never serve in SCHED_IDLE).
  const idles = sys.mayLeaveIdle();
  const f = files(2);
  for (const kind of ['v2', 'v1'] as const) {
    const { next, report } = peer(kind, { idle: true });
    try {
      await next.ready(10_000);
      if (kind === 'v2') await next.presend(f.map((fd) => ({ fd, key: {} })), { arenaFd: f[0]!, regions: [] }, 10_000);
      next.handover(`kho-v1:${f[0]}:0x1000:64`, f.map((fd) => ({ fd, key: {} })), 10_000);
      const r = await report();
      if (!idles) assert.deepEqual(r.policies.atHello, [sys.SCHED_OTHER], `${kind}: never put in SCHED_IDLE`);
      else if (next.leftIdle === 'freeze') assert.deepEqual(r.policies.atHello, [sys.SCHED_IDLE], `${kind}: every thread while it started`);
      else {
        // A machine busy enough to starve it there (CI running other tests): it got the normal
        // class back early, before or after its hello.
        assert.ok(next.leftIdle === 'starving' || next.leftIdle === 'time', `${kind}: put in SCHED_IDLE and taken out (${String(next.leftIdle)})`);
        for (const p of r.policies.atHello as number[]) assert.ok(p === sys.SCHED_IDLE || p === sys.SCHED_OTHER, `${kind}: policy ${p} at its hello`);
      }
      assert.deepEqual(r.policies.atHandover, [sys.SCHED_OTHER], `${kind}: every thread once it took the handover`);
    } finally {
      next.abort();
    }
  }
  const plain = peer('v2');
  try {
    await plain.next.ready(10_000);
    plain.next.handover(`kho-v1:${f[0]}:0x1000:64`, f.map((fd) => ({ fd, key: null })), 10_000);
    assert.deepEqual((await plain.report()).policies.atHello, [sys.SCHED_OTHER], 'not asked to: the normal class throughout');
  } finally {
    plain.next.abort();
    f.forEach((fd) => fs.closeSync(fd));
  }
});

// -------------------------------------------------------------------------------------------
// receiveHandover against anything an image could send: the datagrams are written ahead on a
// socketpair whose sending side is then shut down, so the successor reads them, then EOF.

interface Msg { json?: unknown; raw?: string; fds?: number }

function feed(msgs: Msg[], base: number): number {
  const [mine, theirs] = sys.seqpacketPair();
  for (const m of msgs) {
    const extra = Array.from({ length: m.fds ?? 0 }, () => sys.dup(base));
    try {
      sys.sendPacket(mine, Buffer.from(m.raw ?? JSON.stringify(m.json)), extra);
    } finally {
      extra.forEach((fd) => sys.close(fd));
    }
  }
  sys.shutdownWrite(mine);
  // Keep `mine` open (the successor's answers go there) until the caller is done.
  (globalThis as { __peers?: number[] }).__peers ??= [];
  (globalThis as { __peers?: number[] }).__peers!.push(mine);
  return theirs;
}

const closePeers = (): void => {
  for (const fd of (globalThis as { __peers?: number[] }).__peers ?? []) sys.close(fd);
  (globalThis as { __peers?: number[] }).__peers = [];
};

function validSequence(nEarly: number, closed: number[], nDelta: number, v2: boolean): Msg[] {
  const early = Array.from({ length: nEarly }, (_, i) => 100 + i);
  const delta = Array.from({ length: nDelta }, (_, i) => 200 + i);
  const arena = v2 ? early[0] ?? delta[0] : delta[0];
  const msgs: Msg[] = [];
  if (v2) {
    msgs.push({ json: { luo: 'presend-v1', fds: early, chunks: nEarly ? 1 : 0, arena, regions: [[4096, 4096]] } });
    if (nEarly) msgs.push({ json: { chunk: 0 }, fds: nEarly });
    msgs.push({ json: { luo: 'ahead-v1', regions: [[8192, 100], [12288, 16]] } });
    msgs.push({ json: { luo: 'handover-v2', entry: `kho-v1:${arena}:0x1000:64`, fds: delta, chunks: nDelta ? 1 : 0, closed } });
  } else {
    msgs.push({ json: { luo: 'handover-v1', entry: `kho-v1:${arena}:0x1000:64`, fds: delta, chunks: nDelta ? 1 : 0 } });
  }
  if (nDelta) msgs.push({ json: { chunk: 0 }, fds: nDelta });
  return msgs;
}

test('receiveHandover takes a valid v1 or v2 handover and maps every fd to the same file', () => {
  const base = files(1)[0]!;
  try {
    for (const v2 of [false, true]) {
      const before = sys.openFds().length;
      const link = feed(validSequence(4, [1], 3, v2), base);
      const r = receiveHandover(link);
      const mapped: number[] = [];
      r.fdMap.forEach((n) => n >= 0 && mapped.push(n));
      assert.equal(mapped.length, v2 ? 3 + 3 : 3);
      for (const n of mapped) assert.equal(ino(n), ino(base));
      mapped.forEach((n) => sys.close(n));
      assert.equal(r.link, link, 'the link stays open (closing it at FINISH lets the previous image go)');
      sys.close(r.link);
      closePeers();
      assert.equal(sys.openFds().length, before, 'nothing left open');
    }
  } finally {
    fs.closeSync(base);
  }
});

test('fuzz: whatever an image sends, receiveHandover maps open fds or raises HandoverError, and leaks nothing', () => {
  const base = files(1)[0]!;
  const mutation = fc.oneof(
    fc.record({ kind: fc.constant('drop'), at: fc.nat() }),
    fc.record({ kind: fc.constant('dup'), at: fc.nat() }),
    fc.record({ kind: fc.constant('garble'), at: fc.nat(), raw: fc.string({ maxLength: 40 }) }),
    fc.record({ kind: fc.constant('field'), at: fc.nat(), key: fc.constantFrom('luo', 'fds', 'chunks', 'closed', 'entry', 'chunk', 'arena', 'regions'), value: fc.jsonValue({ maxDepth: 2 }) }),
    fc.record({ kind: fc.constant('fds'), at: fc.nat(), n: fc.integer({ min: 0, max: 6 }) }),
  );
  try {
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 5 }), fc.array(fc.integer({ min: -1, max: 6 }), { maxLength: 3 }), fc.integer({ min: 0, max: 5 }), fc.boolean(),
      fc.array(mutation, { maxLength: 3 }),
      (nEarly, closed, nDelta, v2, muts) => {
        const msgs = validSequence(nEarly, closed, nDelta, v2);
        for (const m of muts) {
          if (msgs.length === 0) break;
          const i = m.at % msgs.length;
          if (m.kind === 'drop') msgs.splice(i, 1);
          else if (m.kind === 'dup') msgs.splice(i, 0, { ...msgs[i]! });
          else if (m.kind === 'garble') msgs[i] = { raw: m.raw || ' ', fds: msgs[i]!.fds };
          else if (m.kind === 'fds') msgs[i] = { ...msgs[i]!, fds: m.n };
          else if (msgs[i]!.json && typeof msgs[i]!.json === 'object') msgs[i] = { ...msgs[i]!, json: { ...(msgs[i]!.json as object), [m.key]: m.value } };
        }
        const before = sys.openFds().length;
        const link = feed(msgs, base);
        try {
          const r = receiveHandover(link, { ahead: (regions) => regions.length });
          const mapped: number[] = [];
          r.fdMap.forEach((n) => n >= 0 && mapped.push(n));
          assert.equal(new Set(mapped).size, mapped.length, 'each fd mapped once');
          for (const n of mapped) assert.equal(ino(n), ino(base));
          mapped.forEach((n) => sys.close(n));
          sys.close(r.link);
        } catch (e) {
          if (!(e instanceof HandoverError)) throw e;
          try {
            sys.close(link); // on success the caller closes it (at FINISH); on failure as well
          } catch { /* closed */ }
        }
        closePeers();
        assert.equal(sys.openFds().length, before, 'no fd leaked');
      },
    ), { numRuns: 300 });
  } finally {
    fs.closeSync(base);
  }
});
