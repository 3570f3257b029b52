/*
 * warm: run the code of the pause before the pause. With 10 000 connections the freeze and
 * the successor's first moments are loops over every connection (fd lists, the connections
 * table, the readiness marks), in code that runs once per process: V8 interprets it, at 5-10×
 * the cost of the optimized loop (measured here: decoding a 10 000-entry table 1.3 ms cold,
 * 0.13 ms warm). Each loop is a plain function over typed arrays; here each runs on made-up
 * input (many times small, twice at the real size: see SMALL_RUNS), while the old version
 * still serves, so that V8 has compiled it when the pause comes; and the Node modules the
 * pause would load are loaded.
 * Lifecycle: loadBuiltins() in a successor before its hello; warmSuccessor(n) in it, once
 * the fds have come early (it is not serving yet: nothing waits for it), then settleThreads()
 * once it has collected; warmRunning(n) in
 * the running image after the early send, in slices (it serves between them). They only
 * load and compute: no I/O, nothing kept but the modules; a failure is ignored (the pause is
 * then only slower).
 */
import { createRequire } from 'node:module';
import { FdtNode } from './fdt/index.js';
import { earlyDelta, readyMarks, translateCells } from './handover/index.js';
import { bigEndianCells, keptRefs } from './handlers/connection.js';
import { busyFirst } from './integrations/server.js';
import * as sys from './sys/index.js';
import { copyWithout, decodeTable, encodeTable, tableSize, type TableSource } from './uapi/connections.js';
import { slicer } from './util/slicer.js';

const req = createRequire(import.meta.url);

/**
 * A successor, before it says hello: the Node modules its first moments load on first use.
 * net.Server#listen loads node:cluster the first time it runs (to ask whether this is a
 * worker), which in a successor is the listener's restore, in the pause (~0.5 ms).
 */
export function loadBuiltins(): void {
  try {
    req('node:cluster');
  } catch { /* only slower */ }
}

/**
 * A successor, once it holds the fds early, has built its sockets, warmed the pause's code and
 * collected: wait until this process's other threads are quiet, for at most `maxMs`. It serves
 * nothing yet, so it blocks. V8 compiles the loops warmed above on its own threads (TurboFan:
 * 5-20 ms of CPU each here), and that ran on during the freeze and the successor's first
 * moments (seen with perf at 10 000 connections: 8-17 ms of it in each pause), on the cores
 * the pause needs. Quiet: under a tenth of a core for QUIET_MS. Returns how long it waited.
 */
export function settleThreads(maxMs = 500): number {
  const start = performance.now();
  try {
    let last = sys.otherThreadsCpuNs();
    while (performance.now() - start < maxMs) {
      sys.poll([], QUIET_MS);
      const now = sys.otherThreadsCpuNs();
      if (now - last < QUIET_MS * 1e5) break;
      last = now;
    }
  } catch { /* only slower */ }
  return performance.now() - start;
}
const QUIET_MS = 10;

function madeUp(n: number): { fds: number[]; map: Int32Array } {
  const fds = new Array<number>(n);
  for (let i = 0; i < n; i++) fds[i] = i + 10;
  const map = new Int32Array(n + 10).fill(-1);
  for (let i = 0; i < n; i++) map[i + 10] = i + 20;
  return { fds, map };
}

/**
 * A table as a successor reads at its freeze: `own` entries (the connections that moved since
 * the baseline) and a base block of `n` named (v3), a few of its connections moved.
 */
function table(n: number, own: number, seed = 0): Uint8Array {
  // Counters of every size a real table holds: small, and with 32-bit halves that are not
  // small integers (V8 had compiled decodeTable for small ones only: "not a Smi").
  const rx = Float64Array.from({ length: own }, (_, i) => [5, 2 ** 32 - 1, 2 ** 33 + 1, 2 ** 31 + 7][(i + seed) & 3]! + seed);
  const moved = [1, 3, 4].filter((j) => j < n);
  const src: TableSource = {
    count: own, flags: 0, first: 1, connFlags: new Array<number>(own).fill(0), rx, tx: rx, bytes: new Map(), encoded: undefined, skip: undefined,
    base: { addr: 4096, count: n, checksum: (2 ** 31 + seed) >>> 0, moved },
  };
  const v = new Uint8Array(tableSize(src));
  encodeTable(v, src);
  return v;
}

/**
 * How each loop is warmed: first SMALL_RUNS times on an input of SMALL entries, then twice
 * at the real size. Only the real size, a few times (as before), left V8 compiling each loop
 * on the stack (OSR) before the code after it had ever run: that code then had no type
 * feedback, the compiled function was thrown away when it got there (seen with
 * --trace-deopt: "Insufficient type feedback" in busyFirst, keptRefs, translateCells,
 * readyMarks), and the pause ran it interpreted. Many small runs give every operation its
 * feedback, and V8 compiles the whole function.
 */
const SMALL = 32;
const SMALL_RUNS = 300;

/** The successor's loops after the handover: the files tree's fds, the table, the order. */
function successorSteps(n: number): Array<() => unknown> {
  const { fds, map } = madeUp(n);
  // Several tables, so that their checksums (32-bit, half of them not small integers) vary.
  const tables = Array.from({ length: n <= SMALL ? 8 : 1 }, (_, seed) => table(n, Math.min(n, 50), seed));
  let k = 0;
  const node = new FdtNode('warm').setCells('fds', fds);
  const ready = new Uint8Array(n);
  for (let i = 0; i < n; i += 20) ready[i] = 1;
  const watched = new Uint8Array(n + 30).fill(1);
  // Each input made as the real one is (the same kinds of arrays: V8's optimized code is
  // only used for the kinds it was made for).
  return [
    () => {
      const all = translateCells(map, node.bytes('fds')!).mine;
      all.indexOf(-1);
      return readyMarks(all.slice(0, n), watched, new Uint8Array(watched.length));
    },
    () => decodeTable(tables[k++ % tables.length]!, { counters: true }),
    () => busyFirst(ready),
  ];
}

/** A successor with n connections sent early, before it blocks for the handover. */
export function warmSuccessor(n: number): void {
  if (n < 256) return;
  try {
    for (const step of successorSteps(SMALL)) for (let r = 0; r < SMALL_RUNS; r++) step();
    for (const step of successorSteps(n)) {
      step();
      step();
    }
    // V8 compiles them on other threads and installs the code when this thread next runs
    // JavaScript: it is about to block until the handover comes, so it runs a little here,
    // for at most INSTALL_MS.
    const until = performance.now() + INSTALL_MS;
    while (performance.now() < until) sys.poll([], 1);
  } catch { /* only slower */ }
}

const INSTALL_MS = 10;

/**
 * The running image's loops at the freeze: the connections kept, the fd delta, the table.
 * Their inputs at the real size (10 000 objects, a map of them, tables of 400 KiB) are made
 * in slices while it serves (made in one go, they held the loop 28 ms here, longer than the
 * pause they prepare for). Each input is made as the real one is: the same shapes of objects
 * and kinds of arrays (V8's optimized code is only used for the kinds it was made for).
 */
async function runningSteps(n: number): Promise<Array<() => unknown>> {
  const due = slicer();
  let k = 0;
  const turn = (): Promise<void> | null => due(k++);
  const fds = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const t = turn();
    if (t) await t;
    fds[i] = i + 10;
  }
  // Shaped as the real ones: the arena's and the listener's refs ({fd, key}) first, then
  // the connections' ({fd, key, stream}).
  const refs = new Array<{ fd: number; key: object; stream?: boolean }>(n);
  const early = new Map<object, { fd: number; index: number }>();
  // The baseline's refs, made as Baseline.take makes them (pushed, each {fd, key, stream}),
  // kept into a list made as the server's snapshot makes it.
  const baseRefs: Array<{ fd: number; key: object; stream: true }> = [];
  for (let i = 0; i < n; i++) {
    const t = turn();
    if (t) await t;
    const r = i < 2 ? { fd: fds[i]!, key: {} as object } : { fd: fds[i]!, key: {} as object, stream: true };
    refs[i] = r;
    early.set(r.key, { fd: r.fd, index: i });
    baseRefs.push({ fd: r.fd, key: r.key, stream: true });
  }
  const earlyFds = Int32Array.from(fds);
  const earlyIndexOfFd = new Int32Array(n + 10).fill(-1);
  for (let i = 0; i < n; i++) earlyIndexOfFd[fds[i]!] = i;
  // Most vouched for, some not (found by key), one not sent early at all.
  const same = new Uint8Array(n).fill(1, 2);
  same[n >> 1] = 0;
  const late = refs.slice();
  late[n - 1] = { fd: n + 10, key: {} as object, stream: true };
  const movedSome = [3, 5, 8];
  const moved = new Uint8Array(n);
  moved[n >> 2] = 1;
  // As writeTable makes it: a few active connections (flags pushed, counters typed), and
  // the base block of the baseline's named (v3).
  const active = 3;
  const connFlags: number[] = [];
  for (let i = 0; i < active; i++) connFlags.push(i & 1);
  const counters = Float64Array.from({ length: active }, (_, i) => [5, 2 ** 33 + 1, 2 ** 31 + 7][i]!);
  const src: TableSource = {
    count: active, flags: 0, first: 1, connFlags, rx: counters, tx: counters, bytes: new Map(), encoded: undefined, skip: undefined,
    base: { addr: 4096, count: n, checksum: 2 ** 31 + 5, moved: movedSome },
  };
  await new Promise((r) => setImmediate(r));
  const v = new Uint8Array(tableSize(src));
  // The flat fds as the server's snapshot makes them: the baseline's, less the moved ones,
  // copied in after the listener and the active connections.
  const flatFds = new Int32Array(n + 1 + active);
  const flatCells = new Uint8Array(4 * (n + 1 + active));
  const earlyCells = bigEndianCells(earlyFds);
  await new Promise((r) => setImmediate(r));
  return [
    () => {
      const out = new Array<{ fd: number; key: object }>(2 + n);
      out[0] = { fd: 3, key: refs[0]!.key };
      out[1] = { fd: 4, key: refs[1]!.key };
      return keptRefs(baseRefs, moved, out, 2);
    },
    () => earlyDelta(late, early, n, { fds: earlyFds, same, earlyIndexOfFd }),
    () => copyWithout(earlyFds, 1, movedSome, flatFds, 1 + active),
    () => copyWithout(earlyCells, 4, movedSome, flatCells, 4 * (1 + active)),
    () => encodeTable(v, src),
  ];
}

/** The running image's loops, in slices (it yields to the event loop between steps). */
export async function warmRunning(n: number): Promise<void> {
  if (n < 256) return;
  try {
    const turn = (): Promise<unknown> => new Promise((resolve) => setImmediate(resolve));
    for (const step of await runningSteps(SMALL)) {
      const due = slicer();
      for (let r = 0; r < SMALL_RUNS; r++) {
        const t = due(r);
        if (t) await t;
        step();
      }
      await turn();
    }
    // One step per turn of the event loop at the real size: a cold run takes a few ms.
    const steps = await runningSteps(n);
    for (let r = 0; r < 2; r++) {
      for (const step of steps) {
        step();
        await turn();
      }
    }
  } catch { /* only slower */ }
}
