/*
 * handlers/connection: established TCP/Unix connections across an update, exactly once in both
 * directions. Shared by the single-socket handler (socket.ts) and the server helper (server.ts).
 *
 * Outgoing, per set of connections:
 *   preserve     trackWrites (so the unsent tail of an in-flight write can be found later)
 *   FREEZE       stopReading (libuv, not just the stream), then wait until the application's
 *                writes have reached the kernel, up to a deadline shared by all connections
 *   snapshot     synchronously at the end of FREEZE, one pass: for each connection its fd, its
 *                handle (the fd's key) and flags; and, only for the few that have any, the
 *                bytes read but not consumed and the bytes written but not sent (those only
 *                when the deadline passed: with onUndrained 'carry'; with 'fail' the FREEZE
 *                fails with ETIMEDOUT instead and the update is cancelled, nothing lost). They
 *                go into one table in preserved memory. An idle connection costs a few property
 *                reads and two words of the table (measured in a freeze: 10 000 connections in
 *                5-9 ms, code that runs once per process and is never optimized).
 *   verify       right before the exec or the handover: every connection still has its handle,
 *                still does not read, and nothing was read or written since the snapshot
 *   CANCEL       resumeReading: the socket carries on as if nothing happened
 *   resume after a handover (a successor that took over failed, before FINISH): each
 *                connection the failed version neither read from nor wrote to (the kernel's
 *                byte counters, sys/tcp.ts, against this image's own at the snapshot) carries
 *                on exactly once; each one it touched is closed and counted: resuming it would
 *                lose or repeat bytes. A Unix connection has no counters: it counts as touched.
 *
 * Counters: every connection luo tracks knows how many bytes of its input had been consumed,
 * and of its output written into the kernel, before this process had it ("base": 0 for one
 * this process accepted or connected, the previous image's figures for an adopted one); the
 * snapshot adds this process's own, and the table carries the sums.
 * Incoming (readTable, adoptConnection): the table copied out of preserved memory, each
 * connection's fd taken from its token's list by index; a new net.Socket on the same fd (same
 * peer), the carried unread bytes put in front of its read buffer, the carried unsent bytes
 * written before anything else.
 *
 * The table's layout is declared in uapi/connections.ts: v3 for a successor that read the
 * baseline's base block ahead (the table then carries only what moved, and names the block),
 * v2 otherwise; v1 is read.
 */
import net from 'node:net';
import { HandoverError, fail } from '../errors.js';
import type { HandlerMemory, IncomingMemory, Retrieve, WakeSet } from '../luo/file-handler.js';
import {
  READ_ENDED as TABLE_READ_ENDED, TABLE_HEADER, UPGRADED, WRITE_ENDED as TABLE_WRITE_ENDED, baseBlockSize, decodeBaseBlock, decodeTable, encodeBaseBlock, encodeEntries, encodeTable,
  gapsOf, nthKept, tableSize, tableSizeAt, type BaseBlock, type CarriedBytes, type DecodedTable, type TableSource,
} from '../uapi/connections.js';
import * as sys from '../sys/index.js';
import { take } from './prebuilt.js';
import { slicer } from '../util/slicer.js';
import {
  QuietWatch, READ_ENDED, WRITE_ENDED, bytesConsumed, isIdle, leftHttp, unwatchQuiet, watchQuiet, bytesWrittenToKernel, endHold, NO_FIRST_READ, fdOf, finHandedOver, firstChanged, handleFd, markHold, newHoldEpoch, pendingWriteBytes, queuedBytes, startHold,
  readBuffered, refreshTimeout, resumeReading, scanSockets, stillStopped, stopAll, stopReading, trackWrites, unsentBytes, untrackWrites, type StreamHandle,
} from './node-internals.js';
import { FIN_SENT, UNKNOWN } from '../uapi/connections.js';

export type OnUndrained = 'carry' | 'fail';

export interface ConnectionOptions {
  /** How long FREEZE waits for written bytes to reach the kernel (default 2000 ms). */
  drainTimeoutMs?: number;
  /** When the deadline passes: carry the unsent bytes (default) or fail the update. */
  onUndrained?: OnUndrained;
}

export const F_WRITE_ENDED = WRITE_ENDED;
export const F_READ_ENDED = READ_ENDED;
if (WRITE_ENDED !== TABLE_WRITE_ENDED || READ_ENDED !== TABLE_READ_ENDED) throw new Error('luo: connection flags and the table format disagree');

const EMPTY = Buffer.alloc(0);

export interface Carried { fd: number; flags: number; unread: Buffer; unsent: Buffer; meta: Buffer; rx: number; tx: number }

/** A connection with bytes in userspace at the snapshot (or an owner's input and meta): the
 *  bytes, and the lengths verify compares. */
interface WithBytes { unread: Buffer; unsent: Buffer; meta?: Buffer; readable: number; writable: number; queued: number }

/** What an upgraded connection's owner adds to its snapshot (handlers/upgraded.ts): the input
 *  it read and did not deliver yet (in front of the socket's unread bytes), and its meta. */
export interface Extra { prefix: Buffer; meta: Buffer }

/**
 * The idle connections of a set, taken once a successor holds the fds sent early (still
 * serving, right before the freeze) and watched from then on (node-internals: QuietWatch). At the snapshot the ones that did not
 * move since are taken from here as they are, without a pass over them: their fds, keys,
 * counters and table entries are these. The others (moved, busy at the time, accepted since)
 * go through the snapshot as usual.
 */
export class Baseline {
  readonly sockets: net.Socket[] = [];
  /** Each idle connection as a ref: its fd, keyed by its handle. */
  readonly refs: Array<{ fd: number; key: object; stream: true }> = [];
  rx: Float64Array = new Float64Array(0);
  tx: Float64Array = new Float64Array(0);
  /** Their table entries, encoded before the freeze (encodeWords: for a next image that
   *  reads no base block); their fds, as numbers and as the files tree stores them
   *  (big-endian cells). */
  words: Uint32Array | null = null;
  /** Or their counters in a base block in preserved memory (writeBlock: for a successor that
   *  reads it ahead, before the freeze): its address and checksum. */
  block: { addr: number; checksum: number } | null = null;
  fds: Int32Array = new Int32Array(0);
  cells: Uint8Array = new Uint8Array(0);
  readonly watch: QuietWatch;
  /** The hold epoch of their snapshot (each is marked with it as it is taken). */
  readonly epoch = newHoldEpoch();
  /** The connections that were not idle (they go through the snapshot). */
  readonly others: net.Socket[] = [];
  /** HTTP: the idle ones parked (not read until they get input), or null when they read. */
  parking: Parking | null = null;

  private constructor(count: number) {
    this.watch = new QuietWatch(count);
  }

  /**
   * Take it over `sockets` in slices of at most `sliceMs`, the event loop serving between
   * them (a pass over 10 000 connections takes ~10 ms here). A connection that moves once
   * taken counts as moved; one accepted meanwhile is the caller's (it is not in `sockets`).
   */
  static async take(sockets: Iterable<net.Socket>, opts: { http: boolean; sliceMs?: number; sentEarly?: ReadonlySet<object>; wake?: WakeSet | null }): Promise<Baseline> {
    const all = [...sockets];
    const b = new Baseline(all.length);
    const rx = new Float64Array(all.length);
    const tx = new Float64Array(all.length);
    const fds = new Int32Array(all.length);
    const due = slicer(opts.sliceMs);
    // HTTP, with the successor's wake set: the idle ones are parked (only those sent early
    // are idle here: their fds are in the set).
    const parking = opts.http && opts.wake ? new Parking(opts.wake) : null;
    try {
      await b.#pass(all, opts, rx, tx, fds, due, parking);
    } catch (e) {
      parking?.abandon();
      throw e;
    }
    b.parking = parking?.active ? parking : null;
    const n = b.sockets.length;
    b.rx = rx.subarray(0, n);
    b.tx = tx.subarray(0, n);
    b.fds = fds.subarray(0, n);
    b.cells = bigEndianCells(b.fds);
    return b;
  }

  async #pass(all: net.Socket[], opts: { http: boolean; sentEarly?: ReadonlySet<object> }, rx: Float64Array, tx: Float64Array, fds: Int32Array, due: (i: number) => Promise<void> | null, parking: Parking | null): Promise<void> {
    for (let i = 0; i < all.length; i++) {
      const turn = due(i);
      if (turn) await turn;
      const s = all[i]!;
      if (s.destroyed) continue;
      const base = (s as Based)[BASE];
      const h = (s as unknown as { _handle: StreamHandle })._handle;
      // Not idle here: an upgraded HTTP connection (a WebSocket: its owner's state crosses
      // with it, taken at the snapshot), and one whose fd the successor did not get early
      // under its handle (only then is its fd the very one sent: the snapshot's `same`).
      if (base === null || !isIdle(s) || finHandedOver(s) || (opts.http && leftHttp(s)) || (opts.sentEarly && !opts.sentEarly.has(h)) || !watchQuiet(s, this.watch, this.sockets.length)) {
        this.others.push(s);
        continue;
      }
      const k = this.sockets.length;
      markHold(s, this.epoch);
      this.sockets.push(s);
      const fd = handleFd(h);
      fds[k] = fd;
      this.refs.push({ fd, key: h, stream: true });
      rx[k] = (base?.rx ?? 0) + bytesConsumed(s);
      tx[k] = (base?.tx ?? 0) + bytesWrittenToKernel(s);
      parking?.park(s, h, fd);
    }
  }

  get count(): number {
    return this.sockets.length;
  }

  /** The idle connections that moved since (they go through the snapshot now). */
  movedSockets(): net.Socket[] {
    const l = this.watch.movedList;
    const out: net.Socket[] = [];
    for (let j = 0; j < l.length; j++) out.push(this.sockets[l[j]!]!);
    return out;
  }

  /** Their table entries, for a table that carries them itself (v2). */
  encodeWords(): void {
    this.words = encodeEntries(new Uint8Array(this.count), this.rx, this.tx, this.count);
  }

  /** The size of their base block. */
  get blockSize(): number {
    return baseBlockSize(this.count);
  }

  /** Their counters as a base block at `addr` (preserved memory of at least blockSize bytes,
   *  reserved by the caller: KHO preserves nothing new between PREPARE and FREEZE). The table
   *  at the freeze then names the block instead of carrying these entries (v3). */
  writeBlock(mem: HandlerMemory, addr: number): void {
    this.block = { addr, checksum: encodeBaseBlock(mem.view(addr, this.blockSize), this.rx, this.tx, this.count) };
  }

  /** Stop watching (the update was cancelled, or a new baseline replaces this one). */
  drop(): void {
    this.watch.onMove = null;
    for (const s of this.sockets) unwatchQuiet(s);
    this.block = null;
    this.parking?.close();
    this.parking = null;
  }
}

/**
 * HTTP idle connections parked once the baseline has them (successor mode, right before the
 * freeze): libuv stops reading them, so that their input waits in the kernel, and the
 * successor's wake set (handover/successor.ts: every connection sent early, level-triggered,
 * reported under this image's numbers; registering 10 000 fds here took 40-60 ms of this
 * event loop, there it costs the successor in SCHED_IDLE) is polled every millisecond (or
 * each loop turn, when turns are longer) instead. One that gets input or a FIN reads again at
 * the next poll and is an ordinary connection from there (what it reads moves it:
 * QuietWatch). At the freeze only those few are stopped: none of the thousands that stayed
 * idle costs the pause anything (stopping 10 000 there took 5-9 ms, in code that runs once
 * per process), and one whose input came too late for this image is read first by the next
 * (it is ready there).
 *
 * Lifecycle: new Parking(wake) → park(s) for each idle one as the baseline is taken (polling
 * starts with the first) → freeze(): no more polling; the ones resumed, for the freeze to
 * stop → close() (CANCEL, or a new baseline): no more polling; whatever is still parked is the
 * caller's to resume or not (after a handover only the connections the next version left
 * alone may read again). The wake set is the transport's, never closed here.
 * Unhappy paths: a poll fails (the set was closed under it: the successor was aborted): every
 * parked connection reads again at once, `active` turns false, and the freeze stops them all
 * as it would have. abandon(): the baseline failed; the same, at once. A report is a hint: a
 * number this image does not know, a connection closed since or reading again already, is
 * left as it is.
 */
export class Parking {
  #wake: WakeSet | null;
  #sockets: net.Socket[] = [];
  #handles: StreamHandle[] = [];
  /** fd → index + 1 among the parked (0: none). */
  #index = new Int32Array(1024);
  #timer: ReturnType<typeof setInterval> | null = null;
  #frozen = false;
  /** Parked connections that got input since, and read again. */
  readonly resumed: net.Socket[] = [];

  constructor(wake: WakeSet) {
    this.#wake = wake;
  }

  /** Still parking (false once it gave up: everything it parked reads again). */
  get active(): boolean {
    return this.#wake !== null;
  }

  /** How many it parked. */
  get count(): number {
    return this.#sockets.length;
  }

  /** Stop reading `s` (an idle connection, handle `h`, fd `fd`, one sent early: in the wake set). */
  park(s: net.Socket, h: StreamHandle, fd: number): void {
    if (!this.#wake || this.#frozen) return;
    stopReading(s);
    const k = this.#sockets.length;
    this.#sockets.push(s);
    this.#handles.push(h);
    if (fd >= this.#index.length) {
      const grown = new Int32Array(Math.max(2 * this.#index.length, fd + 1));
      grown.set(this.#index);
      this.#index = grown;
    }
    this.#index[fd] = k + 1;
    this.#timer ??= setInterval(() => this.#poll(), 1).unref();
  }

  #poll(): void {
    if (!this.#wake || this.#frozen) return;
    let fds: number[];
    try {
      fds = this.#wake.ready();
    } catch {
      this.#giveUp();
      return;
    }
    for (const fd of fds) {
      const k = fd < this.#index.length ? this.#index[fd]! - 1 : -1;
      if (k < 0) continue;
      const s = this.#sockets[k]!;
      if (!stillStopped(s, this.#handles[k]!)) continue;
      resumeReading(s);
      this.resumed.push(s);
    }
  }

  /** The freeze: polling stops; the parked connections that read again since, to stop. */
  freeze(): net.Socket[] {
    this.#frozen = true;
    this.#stopPolling();
    return this.resumed;
  }

  /** The baseline failed: everything parked reads again. */
  abandon(): void {
    this.#giveUp();
  }

  #giveUp(): void {
    if (!this.#frozen) {
      for (let k = 0; k < this.#sockets.length; k++) {
        const s = this.#sockets[k]!;
        if (stillStopped(s, this.#handles[k]!)) resumeReading(s);
      }
    }
    this.close();
  }

  #stopPolling(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** No more polling, nothing more parked (the set stays the transport's). */
  close(): void {
    this.#stopPolling();
    this.#wake = null;
  }
}

/** What a snapshot took of a set of connections (parallel arrays: one index per connection). */
export class ConnSnapshot {
  readonly sockets: net.Socket[];
  /** Each socket's libuv handle at the snapshot: the key of its fd (it dies with the fd). */
  readonly handles: StreamHandle[];
  readonly fds: number[];
  readonly flags: number[];
  /** Only the connections that had bytes in userspace, by index. */
  readonly withBytes = new Map<number, WithBytes>();
  /** Bytes of each connection's input consumed, and of its output written into the kernel. */
  readonly rx: Float64Array;
  readonly tx: Float64Array;
  /** The hold epoch of this snapshot (node-internals: startHold at the point of no return). */
  readonly epoch = newHoldEpoch();
  /** The last quiet.count table entries are a baseline's unmoved connections (this
   *  snapshot's own, the busy ones, come first: the next image adopts in table order, and
   *  serves them first): verified by its watch (none may move after the snapshot), their
   *  entries encoded already, and copied from the baseline's arrays as blocks between the
   *  ones that moved (`moved`, ascending). */
  quiet: { base: Baseline; count: number; movedAt: number; moved: number[] } | null = null;

  constructor(scan: { sockets: net.Socket[]; handles: StreamHandle[]; fds: number[]; flags: number[] }) {
    this.sockets = scan.sockets;
    this.handles = scan.handles;
    this.fds = scan.fds;
    this.flags = scan.flags;
    this.rx = new Float64Array(scan.sockets.length);
    this.tx = new Float64Array(scan.sockets.length);
  }

  get count(): number {
    return this.sockets.length;
  }
}

const BASE = Symbol('luo.base');
type Based = net.Socket & { [BASE]?: { rx: number; tx: number } | null };

/** What the connection had consumed and written before this process had it (null: unknown). */
export function baseOf(s: net.Socket): { rx: number; tx: number } | null {
  const b = (s as Based)[BASE];
  return b === undefined ? { rx: 0, tx: 0 } : b;
}

/** Set a connection's base (adopted: the previous image's figures). */
export function setBase(s: net.Socket, rx: number, tx: number): void {
  (s as Based)[BASE] = rx === UNKNOWN || tx === UNKNOWN ? null : { rx, tx };
}

export function prepareConnection(s: net.Socket): void {
  if (s.destroyed) throw fail('EBADF', 'socket is destroyed');
  if (s.connecting) throw fail('EAGAIN', 'socket is still connecting');
  fdOf(s);
  trackWrites(s);
}

/**
 * After a handover that did not commit: whether another process read from or wrote to `s`
 * since this one stopped (its bytes in the kernel no longer add up to what this process and
 * its predecessors consumed and wrote). A peer's FIN arriving meanwhile is not a use; this
 * side's FIN, when this process had not sent one, is. Unknown (a Unix socket, no base): true.
 */
export function touchedElsewhere(s: net.Socket): boolean {
  const h = (s as unknown as { _handle?: StreamHandle | null })._handle;
  const b = baseOf(s);
  if (!h || !b) return true;
  let k: sys.StreamCounters | null;
  try {
    k = sys.tcpCounters(handleFd(h));
  } catch {
    return true;
  }
  if (!k) return true;
  if (k.finSent !== finHandedOver(s)) return true;
  return k.consumed - (k.finReceived ? 1 : 0) !== b.rx + bytesConsumed(s) || k.written - (k.finSent ? 1 : 0) !== b.tx + bytesWrittenToKernel(s);
}

/**
 * The previous version resuming after a handover that did not commit: every connection the
 * failed one left alone reads again (its idle timeout restarted: the event loop stood still),
 * every one it touched is closed. The counts.
 */
export function resumeConnections(sockets: Iterable<net.Socket>): { resumed: number; lost: number } {
  let resumed = 0;
  let lost = 0;
  for (const s of [...sockets]) {
    if (s.destroyed) continue;
    if (touchedElsewhere(s)) {
      s.destroy();
      lost++;
    } else {
      resumeReading(s);
      refreshTimeout(s);
      resumed++;
    }
  }
  return { resumed, lost };
}

export function releaseConnection(s: net.Socket): void {
  untrackWrites(s);
}

/** Stop reading every connection, then wait (one shared deadline) for their writes to drain. */
export async function freezeConnections(sockets: Iterable<net.Socket>, opts: ConnectionOptions = {}): Promise<net.Socket[]> {
  let pending = stopAll(sockets);
  const deadline = Date.now() + (opts.drainTimeoutMs ?? 2000);
  while (pending.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 1));
    pending = pending.filter((s) => !s.destroyed && pendingWriteBytes(s) > 0);
  }
  if (pending.length > 0 && (opts.onUndrained ?? 'carry') === 'fail') {
    const bytes = pending.reduce((n, s) => n + pendingWriteBytes(s), 0);
    throw fail('ETIMEDOUT', `${pending.length} connection(s) still had ${bytes} unsent bytes after ${opts.drainTimeoutMs ?? 2000} ms (onUndrained: 'fail')`);
  }
  return pending;
}

export function thawConnections(sockets: Iterable<net.Socket>): void {
  for (const s of sockets) resumeReading(s);
}

/**
 * Synchronous capture of every live connection in `sockets`, in one pass. A connection
 * accepted during FREEZE was never stopped: it stops here. `extra`: the upgraded ones, with
 * what their owners add (flagged UPGRADED in the table).
 */
export function snapshotConnections(sockets: Iterable<net.Socket>, extra?: ReadonlyMap<net.Socket, Extra>): ConnSnapshot {
  const scan = scanSockets(sockets, true);
  const snap = new ConnSnapshot(scan);
  const { rx, tx, epoch } = snap;
  for (let i = 0; i < scan.sockets.length; i++) {
    const s = scan.sockets[i]!;
    markHold(s, epoch);
    const b = (s as Based)[BASE];
    if (b === null) {
      rx[i] = UNKNOWN;
      tx[i] = UNKNOWN;
    } else {
      rx[i] = (b?.rx ?? 0) + bytesConsumed(s);
      tx[i] = (b?.tx ?? 0) + bytesWrittenToKernel(s);
    }
    if (finHandedOver(s)) scan.flags[i]! |= FIN_SENT;
  }
  for (const i of scan.busy) {
    const s = scan.sockets[i]!;
    snap.withBytes.set(i, { unread: readBuffered(s), unsent: unsentBytes(s), readable: s.readableLength, writable: s.writableLength, queued: queuedBytes(scan.handles[i]!) });
  }
  if (extra?.size) {
    for (let i = 0; i < scan.sockets.length; i++) {
      const x = extra.get(scan.sockets[i]!);
      if (!x) continue;
      scan.flags[i]! |= UPGRADED;
      const s = scan.sockets[i]!;
      const had = snap.withBytes.get(i);
      const own = had?.unread ?? EMPTY;
      snap.withBytes.set(i, {
        unread: x.prefix.length ? (own.length ? Buffer.concat([x.prefix, own]) : x.prefix) : own,
        unsent: had?.unsent ?? EMPTY, meta: x.meta,
        readable: s.readableLength, writable: s.writableLength, queued: queuedBytes(scan.handles[i]!),
      });
    }
  }
  return snap;
}

/**
 * A snapshot with a baseline: the snapshot of the others (`rest`: the baseline's others, its
 * moved ones and those accepted since) as table entries 0.., then the baseline's unmoved
 * connections as it took them (no pass over them: their entries, fds and keys are the
 * baseline's).
 */
export function snapshotWithBaseline(base: Baseline, rest: Iterable<net.Socket>, extra?: ReadonlyMap<net.Socket, Extra>): ConnSnapshot {
  const movedAt = base.watch.movedList.length;
  const snap = snapshotConnections(rest, extra);
  const moved = base.watch.movedList.slice(0, movedAt).sort((a, b) => a - b);
  snap.quiet = { base, count: base.count - movedAt, movedAt, moved };
  return snap;
}

/** fds as the files tree stores them: big-endian u32 cells. */
export function bigEndianCells(fds: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(4 * fds.length);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < fds.length; i++) dv.setUint32(4 * i, fds[i]! >>> 0);
  return out;
}

/** Into out[at..]: each of `refs` whose index is not marked in `moved`. How many. */
export function keptRefs<R>(refs: readonly R[], moved: Uint8Array, out: R[], at: number): number {
  let j = at;
  for (let i = 0; i < refs.length; i++) if (moved[i] === 0) out[j++] = refs[i]!;
  return j - at;
}

/** The point of no return: from here this process neither writes to nor reads any connection
 *  of the snapshot (a successor owns them) until releaseSnapshot. */
export function holdSnapshot(snap: ConnSnapshot): void {
  startHold(snap.epoch);
  if (snap.quiet) startHold(snap.quiet.base.epoch);
}

/** The update did not commit: what this process wrote meanwhile goes out. */
export function releaseSnapshot(snap: ConnSnapshot): void {
  endHold(snap.epoch);
  if (snap.quiet) endHold(snap.quiet.base.epoch);
}

/** EBUSY unless every connection of the snapshot is exactly as it was then. */
export function verifySnapshot(snap: ConnSnapshot): void {
  const changed = (i: number): never => {
    throw fail('EBUSY', `connection fd ${snap.fds[i]} was read, written or closed after its snapshot`);
  };
  let skip: Uint8Array | null = null;
  if (snap.withBytes.size) {
    skip = new Uint8Array(snap.count);
    for (const [i, b] of snap.withBytes) {
      skip[i] = 1;
      const s = snap.sockets[i]!;
      const h = snap.handles[i]!;
      if (!stillStopped(s, h) || s.readableLength !== b.readable || s.writableLength !== b.writable || queuedBytes(h) !== b.queued) changed(i);
    }
  }
  const q = snap.quiet;
  if (q) {
    // The baseline's connections: none may have moved since the snapshot.
    const l = q.base.watch.movedList;
    if (l.length !== q.movedAt) throw fail('EBUSY', `connection fd ${q.base.fds[l[q.movedAt]!]} was read, written or closed after its snapshot`);
  }
  const i = firstChanged(snap, skip);
  if (i >= 0) changed(i);
}

/**
 * Write a snapshot's connections table into fresh preserved memory; returns its address.
 * Connection i of the snapshot is fd `first + i` of the token's list.
 */
export function writeTable(mem: HandlerMemory, snap: ConnSnapshot, flags: number, first: number): number {
  const q = snap.quiet;
  // The baseline's unmoved connections: named as a base block (v3), or their entries copied in.
  const block = q?.base.block ?? null;
  const words = q && !block ? (q.base.words ?? (q.base.encodeWords(), q.base.words!)) : undefined;
  const bytes = new Map<number, { unread: Uint8Array; unsent: Uint8Array; meta?: Uint8Array }>();
  for (const [i, b] of snap.withBytes) bytes.set(i, b);
  const count = snap.count + (words ? q!.count : 0);
  // One shape for every table (warm.ts makes its input the same way: V8's optimized
  // encodeTable is for objects of this shape).
  const src: TableSource = {
    count, flags, first, connFlags: snap.flags, rx: snap.rx, tx: snap.tx, bytes, encoded: words, skip: words ? q!.moved : undefined,
    base: block ? { addr: block.addr, count: q!.base.count, checksum: block.checksum, moved: q!.moved } : undefined,
  };
  const size = tableSize(src);
  const addr = mem.alloc(size);
  // Fresh arena memory reads as zeros (alloc never hands out a used page): an idle entry
  // needs only what is not zero.
  encodeTable(mem.view(addr, size), src);
  return addr;
}

/** Free a table writeTable made (its size is in its header). */
export function freeTable(mem: HandlerMemory, addr: number): void {
  mem.free(addr, tableSizeAt(mem.view(addr, TABLE_HEADER)));
}

/**
 * A connections table as the next image reads it: flat arrays, bytes only where carried. The
 * table's own connections come first; after them, a v3 table's base block's connections not
 * moved (their counters read from the block, most often before the freeze: readAhead), found
 * by rank without a copy of the block's arrays.
 */
export class CarriedTable {
  /** This process's fd of each connection. */
  readonly fds: Int32Array;
  /** The carried bytes, only for the connections that have any, by index. */
  readonly bytes: Map<number, CarriedBytes>;
  /** Whether the table said it came from an http.Server. */
  readonly http: boolean;
  /** Index in the token's fd list of connection 0's fd. */
  readonly first: number;
  /** The table's own connections: flags and what each had consumed and written (UNKNOWN: not known). */
  readonly #flags: Uint32Array;
  readonly #rx: Float64Array;
  readonly #tx: Float64Array;
  /** The base block's connections (after the own ones): its counters, and gapsOf(moved). */
  readonly #base: { rx: Float64Array; tx: Float64Array; gaps: Int32Array } | null;

  constructor(fds: Int32Array, flags: Uint32Array, bytes: Map<number, CarriedBytes>, http: boolean, first: number, rx: Float64Array, tx: Float64Array, base: { rx: Float64Array; tx: Float64Array; gaps: Int32Array } | null = null) {
    this.fds = fds;
    this.#flags = flags;
    this.bytes = bytes;
    this.http = http;
    this.first = first;
    this.#rx = rx;
    this.#tx = tx;
    this.#base = base;
  }

  get count(): number {
    return this.fds.length;
  }

  /** Connection i as adoptConnection takes it. */
  at(i: number): Carried {
    const own = this.#flags.length;
    if (i >= own && this.#base) {
      const j = nthKept(this.#base.gaps, i - own);
      return { fd: this.fds[i]!, flags: 0, unread: EMPTY, unsent: EMPTY, meta: EMPTY, rx: this.#base.rx[j]!, tx: this.#base.tx[j]! };
    }
    const b = this.bytes.get(i);
    return { fd: this.fds[i]!, flags: this.#flags[i]!, unread: b?.unread ?? EMPTY, unsent: b?.unsent ?? EMPTY, meta: b?.meta ?? EMPTY, rx: this.#rx[i]!, tx: this.#tx[i]! };
  }

  /** Total bytes carried read-but-unconsumed, and written-but-unsent. */
  get unread(): number {
    let n = 0;
    for (const b of this.bytes.values()) n += b.unread.length;
    return n;
  }

  get unsent(): number {
    let n = 0;
    for (const b of this.bytes.values()) n += b.unsent.length;
    return n;
  }
}

/** Base blocks read ahead (a successor, before the freeze), by arena address. */
const readAheadBlocks = new Map<number, BaseBlock>();

/**
 * A successor, before the freeze: the running image named `bytes` (at arena address `addr`)
 * as memory of its handover to read now (ahead-v1). When it is a base block, decode and keep
 * it for the table that will name it (readTable), so that the pause does not read it. False
 * when it is not one, or is damaged: the table then reads it at boot, and refuses it there.
 */
export function readAhead(addr: number, bytes: Uint8Array): boolean {
  const b = decodeBaseBlock(bytes);
  if (typeof b === 'string') return false;
  readAheadBlocks.set(addr, b);
  return true;
}

/**
 * The base block a v3 table names: the one read ahead if it is the same (its checksum and
 * count), else read from handed-over memory now. Its memory is claimed and given back either
 * way. HandoverError when it is missing, damaged or another block.
 */
function baseBlockOf(ref: NonNullable<DecodedTable['base']>, a: Retrieve): BaseBlock {
  const mem = a.memory;
  let size: number;
  try {
    size = mem.claim(ref.addr);
  } catch (e) {
    throw new HandoverError(`${a.compatible} token ${a.token}: no base block at ${ref.addr}: ${(e as Error).message}`);
  }
  try {
    const ahead = readAheadBlocks.get(ref.addr);
    readAheadBlocks.delete(ref.addr);
    const b = ahead && ahead.checksum === ref.checksum && ahead.count === ref.count ? ahead : decodeBaseBlock(mem.view(ref.addr, size));
    if (typeof b === 'string') throw new HandoverError(`${a.compatible} token ${a.token}: ${b}`);
    if (b.checksum !== ref.checksum || b.count !== ref.count) {
      throw new HandoverError(`${a.compatible} token ${a.token}: the base block at ${ref.addr} (${b.count} connections, checksum ${b.checksum.toString(16)}) is not the one the table names (${ref.count}, ${ref.checksum.toString(16)})`);
    }
    return b;
  } finally {
    mem.free(ref.addr, size);
  }
}

/**
 * Read the connections table handed over at the token's payload, copy it out and free its
 * memory (and its base block's). Each connection's fd comes from the token's list (v1 tables
 * named the previous image's numbers: they are found in the same list). HandoverError if
 * malformed or damaged.
 */
export function readTable(a: Retrieve): CarriedTable {
  const addr = Number(a.data);
  const mem: IncomingMemory = a.memory;
  let size: number;
  try {
    size = mem.claim(addr);
  } catch (e) {
    throw new HandoverError(`${a.compatible} token ${a.token}: no connections table at ${addr}: ${(e as Error).message}`);
  }
  try {
    const t = decodeTable(mem.view(addr, size), { counters: true });
    if (typeof t === 'string') throw new HandoverError(`${a.compatible} token ${a.token}: ${t}`);
    let fds: Int32Array = new Int32Array(t.count);
    let base: { rx: Float64Array; tx: Float64Array; gaps: Int32Array } | null = null;
    if (t.version >= 2) {
      let total = t.count;
      if (t.base && t.base.addr !== 0) {
        const b = baseBlockOf(t.base, a);
        base = { rx: b.rx, tx: b.tx, gaps: gapsOf(t.base.moved) };
        total += b.count - t.base.moved.length;
      }
      if (t.first + total > a.fdCount) throw new HandoverError(`${a.compatible} token ${a.token}: the table has ${total} connections from fd #${t.first}, the token carries ${a.fdCount} fds`);
      fds = a.fdRange(t.first, total);
    } else {
      const index = new Map<number, number>();
      a.previousFds.forEach((n, i) => index.set(n, i));
      for (let i = 0; i < t.count; i++) {
        const at = index.get(t.oldFds![i]!);
        if (at === undefined) throw new HandoverError(`${a.compatible} token ${a.token}: connection ${i} names fd ${t.oldFds![i]}, which the token does not carry`);
        fds[i] = a.fd(at);
      }
    }
    const table = new CarriedTable(fds, t.connFlags, t.bytes, (t.flags & 1) !== 0, t.version >= 2 ? t.first : 1, t.rx!, t.tx!, base);
    return a.rollback ? withoutTouched(table, a) : table;
  } finally {
    mem.free(addr, size);
  }
}

/**
 * An image brought back in place after its successor failed: the connections that one read
 * from or wrote to (the kernel's counters differ from the table's) are closed, counted and
 * left out; the others are adopted exactly as handed over.
 */
function withoutTouched(t: CarriedTable, a: Retrieve): CarriedTable {
  const keep: Carried[] = [];
  const bytesOf: Array<CarriedBytes | undefined> = [];
  let lost = 0;
  for (let i = 0; i < t.count; i++) {
    const c = t.at(i);
    let k: sys.StreamCounters | null = null;
    try {
      k = sys.tcpCounters(c.fd);
    } catch { /* closed by the failed image */ }
    const finSent = (c.flags & FIN_SENT) !== 0;
    const same = k !== null && c.rx !== UNKNOWN && k.finSent === finSent
      && k.consumed - (k.finReceived ? 1 : 0) === c.rx && k.written - (k.finSent ? 1 : 0) === c.tx;
    if (same) {
      keep.push(c);
      bytesOf.push(t.bytes.get(i));
    } else {
      try {
        sys.closeFd(c.fd);
      } catch { /* gone */ }
      lost++;
    }
  }
  a.lost(lost);
  if (lost === 0) return t;
  const bytes = new Map<number, CarriedBytes>();
  bytesOf.forEach((b, j) => b && bytes.set(j, b));
  return new CarriedTable(Int32Array.from(keep, (c) => c.fd), Uint32Array.from(keep, (c) => c.flags), bytes, t.http, t.first, Float64Array.from(keep, (c) => c.rx), Float64Array.from(keep, (c) => c.tx));
}

/**
 * Next image: a net.Socket on the carried fd, with the carried bytes delivered first.
 * `upgraded`: it does not read until its new owner listens for data, and its carried input is
 * left for that owner (the head of the replayed upgrade), not put in the read buffer.
 */
export function adoptConnection(c: Carried, opts: { allowHalfOpen?: boolean; upgraded?: boolean } = {}): net.Socket {
  // Built before the freeze (a successor, prebuilt.ts): it has not read yet; it reads now,
  // as a socket built here would from its first moment (an upgraded one waits for its owner).
  const pre = take(c.fd);
  let s: net.Socket;
  if (pre) {
    s = pre;
    s.allowHalfOpen = opts.allowHalfOpen ?? false;
    if (!opts.upgraded) s.read(0); // what the constructor does for a socket that reads at once
  } else {
    s = new net.Socket({ fd: c.fd, readable: true, writable: true, allowHalfOpen: opts.allowHalfOpen ?? false, ...(opts.upgraded ? NO_FIRST_READ : {}) });
  }
  setBase(s, c.rx, c.tx);
  if (c.unread.length && !opts.upgraded) s.unshift(c.unread);
  if (c.unsent.length) s.write(c.unsent);
  if (c.flags & F_WRITE_ENDED) s.end();
  return s;
}
