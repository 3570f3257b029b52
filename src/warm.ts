/*
 * warm: run the code of the pause before the pause. With 10 000 connections the freeze and
 * the successor's first moments are loops over every connection (fd lists, the connections
 * table, the readiness marks), in code that runs once per process: V8 interprets it, at 5-10×
 * the cost of the optimized loop (measured here: decoding a 10 000-entry table 1.3 ms cold,
 * 0.13 ms warm). Each loop is a plain function over typed arrays; here each runs a few times
 * on made-up input of the real size, while the old version still serves, so that V8 has
 * compiled it when the pause comes; and the Node modules the pause would load are loaded.
 * Lifecycle: loadBuiltins() in a successor before its hello; warmSuccessor(n) in it, once
 * the fds have come early (it is not serving yet: nothing waits for it); warmRunning(n) in
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
import { decodeTable, encodeTable, tableSize, without } from './uapi/connections.js';

const ROUNDS = 4;

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

function madeUp(n: number): { fds: number[]; map: Int32Array } {
  const fds = new Array<number>(n);
  for (let i = 0; i < n; i++) fds[i] = i + 10;
  const map = new Int32Array(n + 10).fill(-1);
  for (let i = 0; i < n; i++) map[i + 10] = i + 20;
  return { fds, map };
}

function table(n: number): Uint8Array {
  const rx = new Float64Array(n).fill(2 ** 33 + 1);
  const src = { count: n, flags: 0, first: 1, connFlags: new Array<number>(n).fill(0), rx, tx: rx, bytes: new Map() };
  const v = new Uint8Array(tableSize(src));
  encodeTable(v, src);
  return v;
}

/** The successor's loops after the handover: the files tree's fds, the table, the order. */
export function warmSuccessor(n: number): void {
  if (n < 256) return;
  try {
    const { fds, map } = madeUp(n);
    const v = table(n);
    const node = new FdtNode('warm').setCells('fds', fds);
    const ready = new Uint8Array(n);
    for (let i = 0; i < n; i += 200) ready[i] = 1;
    const watched = new Uint8Array(n + 30).fill(1);
    // Each input made as the real one is (the same kinds of arrays: V8's optimized code is
    // only used for the kinds it was made for).
    for (let r = 0; r < ROUNDS; r++) {
      const all = translateCells(map, node.bytes('fds')!).mine;
      all.indexOf(-1);
      const mine = all.slice(0, n);
      decodeTable(v, { counters: true });
      readyMarks(mine, watched, new Uint8Array(watched.length));
      busyFirst(ready);
    }
    // V8 compiles them on other threads and installs the code when this thread next runs
    // JavaScript: it is about to block until the handover comes, so it runs a little here,
    // for at most INSTALL_MS.
    const until = performance.now() + INSTALL_MS;
    while (performance.now() < until) sys.poll([], 1);
  } catch { /* only slower */ }
}

const INSTALL_MS = 10;

/** The running image's loops at the freeze, in slices (each round yields to the event loop). */
export async function warmRunning(n: number): Promise<void> {
  if (n < 256) return;
  try {
    const { fds } = madeUp(n);
    // Shaped as the real ones: the arena's and the listener's refs ({fd, key}) first, then
    // the connections' ({fd, key, stream}).
    const refs: Array<{ fd: number; key: object; stream?: boolean }> = fds.map((fd, i) => (i < 2 ? { fd, key: {} as object } : { fd, key: {} as object, stream: true }));
    const early = new Map<object, { fd: number; index: number }>(refs.map((r, index) => [r.key, { fd: r.fd, index }]));
    const earlyFds = Int32Array.from(fds);
    const earlyIndexOfFd = new Int32Array(n + 10).fill(-1);
    fds.forEach((fd, i) => (earlyIndexOfFd[fd] = i));
    const same = new Uint8Array(n).fill(1, 2);
    const movedSome = [3, 5, 8];
    const moved = new Uint8Array(n);
    const out = new Array<{ fd: number; key: object }>(n + 1);
    const src = { count: n, flags: 0, first: 1, connFlags: [] as number[], rx: new Float64Array(0), tx: new Float64Array(0), bytes: new Map(), encoded: new Uint32Array(10 * n) };
    const v = new Uint8Array(tableSize(src));
    const steps = [
      () => keptRefs(refs, moved, out, 1),
      () => earlyDelta(refs, early, n, { fds: earlyFds, same, earlyIndexOfFd }),
      () => without(earlyFds, 1, movedSome),
      () => without(bigEndianCells(earlyFds), 4, movedSome),
      () => encodeTable(v, src),
    ];
    // One step per turn of the event loop: the first, cold, runs take a few ms each.
    for (let r = 0; r < ROUNDS; r++) {
      for (const step of steps) {
        step();
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
  } catch { /* only slower */ }
}
