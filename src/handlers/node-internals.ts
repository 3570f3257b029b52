/*
 * handlers/node-internals: the ONLY place luo touches Node.js internals. Every other module
 * goes through these functions; test/node-internals.test.ts fails loudly on a Node version
 * where any of them changed.
 *
 * What luo relies on, and why:
 *   socket._handle, server._handle        the libuv stream/TCP/Pipe wrap
 *   handle.fd                             the kernel fd behind it (POSIX)
 *   handle.readStop()/readStart()         socket.pause() does not stop libuv reading (64 KiB
 *   handle.reading                        went into userspace); readStop does. Node's own flag
 *                                         `handle.reading` must match, or a later resume
 *                                         silently never reads (Node's tryReadStart checks it).
 *   socket._readableState.buffer          bytes read into userspace and not consumed: an Array
 *     (+ bufferIndex) or a BufferList     with bufferIndex (Node ≥ 20.?), a BufferList before
 *   socket._writableState.getBuffer()     writes Node has not handed to libuv yet
 *   handle.writeQueueSize                 bytes libuv has not written yet
 *   _readableState.length,                bytes in userspace either way: 0 and 0 (and an empty
 *     _writableState.length               libuv queue) is an idle connection, nothing to copy
 *   _readableState.endEmitted/.destroyed, the end and destroyed flags, read from the states
 *     _writableState.ending               the freeze's passes read anyway (see scanSockets)
 *   the handle object itself              lives exactly as long as its fd (a reconnect or a
 *                                         new listen makes a new one): the key that lets a
 *                                         successor get the fd before the freeze
 *   socket._writeGeneric                  wrapped per socket to remember the in-flight write,
 *                                         whose unsent tail is the last writeQueueSize bytes
 *   handle.bytesRead                      bytes this process read out of the kernel (a C++
 *                                         accessor); with socket._bytesDispatched (bytes handed
 *                                         to libuv) minus writeQueueSize, what it wrote into the
 *                                         kernel: set against TCP_INFO, they tell whether another
 *                                         process used the connection
 *   _writableState.finalCalled            end() reached _final: the FIN went to the kernel
 *   socket._unrefTimer()                  restarts the socket's idle timeout (after a pause)
 *   socket._final                         with _writeGeneric, held (holdOutput) from the
 *                                         point of no return: a previous image waiting for its
 *                                         successor's FINISH must not write into a connection
 *                                         the successor now owns (a timer, a heartbeat)
 *   socket.parser                         an http.Server connection's HTTP parser: null once
 *                                         the server gave the socket away ('upgrade', CONNECT)
 *   server.emit                           wrapped per server (observeEmits) to see 'upgrade'
 *                                         and 'connect' without listening for them (a listener
 *                                         would change how Node treats an upgrade request)
 *   new net.Socket({manualStart})         a socket on an fd that does not read until someone
 *                                         listens for data (an upgraded connection, adopted in
 *                                         the next image, waits for its owner)
 *   new http.IncomingMessage(socket)      the request of a carried upgraded connection, made
 *                                         again in the next image (incomingRequest)
 *   v8 --expose-gc, set at run time       collectGarbage(): a synchronous full collection;
 *                                         collectYoung(): gc({type: 'minor'}), a scavenge
 *   net.Socket.prototype's write, end,    wrapped once per process, at boot (hookSockets;
 *     push, unshift and destroy           watchQuiet): the first call for a watched idle
 *                                         connection marks it moved
 *   require('_http_common').HTTPParser    an HTTP connection's parser reads its consumed
 *     .kOnExecute, parser[kOnExecute]     handle in C++ (never through push) and calls this
 *                                         after each chunk: wrapped per watched connection
 *
 * Lifecycle for a preserved socket: trackWrites() at preserve time → stopReading() at FREEZE
 * → snapshot (readBuffered, unsentBytes) synchronously at the end of FREEZE (nothing runs
 * between it and the exec) → resumeReading() if the update is cancelled. The snapshot only
 * copies: on exec the old image's buffers vanish anyway, and on CANCEL nothing needs putting
 * back.
 */
import type net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import { createRequire } from 'node:module';
import { fail } from '../errors.js';
import { httpModule, netModule } from './builtins.js';

export interface StreamHandle {
  fd: number;
  reading?: boolean;
  readStop(): number;
  readStart(): number;
  writeQueueSize: number;
}

interface InFlight { chunks: Buffer[]; bytes: number }
const TRACKED = Symbol('luo.inflight');

type WriteGeneric = (this: Tracked, writev: boolean, data: unknown, encoding: string, cb: (err?: Error) => void) => unknown;
type Tracked = net.Socket & { [TRACKED]?: InFlight | null; _writeGeneric?: WriteGeneric };

export function handleOf(s: net.Socket | net.Server): StreamHandle {
  const h = (s as unknown as { _handle?: StreamHandle | null })._handle;
  if (!h) throw fail('EBADF', `${s.constructor.name} has no handle (closed, or not yet connected/listening)`);
  return h;
}

/** Shared and never written: what an idle connection carries. */
const EMPTY = Buffer.alloc(0);

/** The kernel fd behind a socket or a listening server. */
export function fdOf(s: net.Socket | net.Server): number {
  const fd = handleOf(s).fd;
  if (typeof fd !== 'number' || fd < 0) throw fail('EBADF', `${s.constructor.name} has no file descriptor (handle.fd is ${String(fd)})`);
  return fd;
}

/** Stop libuv reading, keeping Node's reading flag consistent. Idempotent. */
export function stopReading(s: net.Socket): void {
  stopHandle(handleOf(s));
}

function stopHandle(h: StreamHandle): void {
  if (h.reading !== false) {
    h.reading = false;
    h.readStop();
  }
}

// ---------------------------------------------------------------------------------------
// Passes over every connection of a server (FREEZE, snapshot, verify). With 10 000 connections
// each costs milliseconds in code that runs once per process (never optimized) and in objects
// long out of the CPU's caches, so each pass reads as little as it can: the stream states
// once, Node's `_handle` as the sign of a closed socket (Socket._destroy drops it at once),
// and the fd from a cache on the handle (handle.fd is a C++ accessor; a handle's fd never
// changes).

const FD = Symbol('luo.fd');
/** Socket bits of a snapshot: the write side ended, the read side ended. */
export const WRITE_ENDED = 1;
export const READ_ENDED = 2;

interface SocketState {
  _handle: StreamHandle | null;
  _readableState: { length: number; endEmitted: boolean; destroyed: boolean };
  _writableState: { length: number; ending: boolean };
}

/** The fd of a handle, kept on it after the first read. */
export function handleFd(h: StreamHandle): number {
  const c = (h as unknown as Record<symbol, number | undefined>)[FD];
  if (c !== undefined) return c;
  const fd = h.fd;
  if (typeof fd === 'number' && fd >= 0) (h as unknown as Record<symbol, number>)[FD] = fd;
  return fd;
}

/** Stop reading every live socket; returns those with writes still on their way to the kernel. */
export function stopAll(sockets: Iterable<net.Socket>): net.Socket[] {
  const pending: net.Socket[] = [];
  for (const s of sockets) {
    const x = s as unknown as SocketState;
    const h = x._handle;
    if (!h || x._readableState.destroyed) continue;
    stopHandle(h);
    if (x._writableState.length > 0) pending.push(s);
  }
  return pending;
}

/** One pass over the live sockets, into parallel arrays. */
export interface SocketScan {
  sockets: net.Socket[];
  handles: StreamHandle[];
  fds: number[];
  /** WRITE_ENDED | READ_ENDED */
  flags: number[];
  /** Indices of the sockets with bytes in userspace (read and not consumed, or not yet sent). */
  busy: number[];
}

/** Scan the live sockets (and stop reading each, when `stop`). */
export function scanSockets(sockets: Iterable<net.Socket>, stop: boolean): SocketScan {
  const out: SocketScan = { sockets: [], handles: [], fds: [], flags: [], busy: [] };
  for (const s of sockets) {
    const x = s as unknown as SocketState;
    const h = x._handle;
    const rs = x._readableState;
    if (!h || rs.destroyed) continue;
    if (stop) stopHandle(h);
    const ws = x._writableState;
    const i = out.sockets.length;
    out.sockets.push(s);
    out.handles.push(h);
    out.fds.push(handleFd(h));
    out.flags.push((ws.ending ? WRITE_ENDED : 0) | (rs.endEmitted ? READ_ENDED : 0));
    if (rs.length !== 0 || ws.length !== 0) out.busy.push(i);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Quiet connections (successor mode). At the early send a server notes which of its
// connections are idle (nothing in userspace, no request in progress) and watches them: the
// first thing that happens to one afterwards (bytes delivered to it, a write, an end, a
// destroy; for an HTTP connection, bytes its parser consumed) marks it moved, once, in O(1).
// In the pause only the moved ones and the ones accepted since are stopped, snapshotted and
// verified; an unmoved one is exactly as it was at the early send, so what was taken of it
// then still holds. Relied on: net.Socket's write, end, push, unshift and destroy (wrapped
// once per process, on the prototype) and, for HTTP, the parser's kOnExecute callback (the
// parser reads a consumed handle in C++, never through push): wrapped per connection, by
// the early send.

const QUIET = Symbol('luo.quiet');
/** A connection's hold epoch (0: none; newHoldEpoch's are 1 and up). */
const HOLD = Symbol('luo.hold');
const HELD_QUEUE = Symbol('luo.heldQueue');
const QUIET_AT = Symbol('luo.quietAt');
const ON_EXECUTE_WRAP = Symbol('luo.onExecute');

/** What moved among the connections watched since one early send. */
export class QuietWatch {
  /** 1 for each watched index that moved. */
  readonly moved: Uint8Array;
  /** The indices that moved, in order. */
  readonly movedList: number[] = [];
  /** Called once for each connection as it moves (a server that is freezing stops it). */
  onMove: ((s: net.Socket) => void) | null = null;
  constructor(count: number) {
    this.moved = new Uint8Array(count);
  }
}
/** A connection's watch when none watches it (primeSocket; a watch that saw it move). */
const UNWATCHED = new QuietWatch(0);

type Watched = net.Socket & { [QUIET]?: QuietWatch; [QUIET_AT]?: number };
let activityInstalled = false;

function moved(s: Watched): void {
  const w = s[QUIET];
  if (w === undefined || w === UNWATCHED) return;
  s[QUIET] = UNWATCHED;
  const i = s[QUIET_AT]!;
  if (w.moved[i]) return;
  w.moved[i] = 1;
  w.movedList.push(i);
  w.onMove?.(s);
}

function installActivity(): void {
  if (activityInstalled) return;
  const proto = netModule().Socket.prototype as unknown as Record<string, unknown>;
  for (const name of ['write', 'end', 'push', 'unshift', 'destroy']) {
    if (typeof proto[name] !== 'function') throw fail('ENOTSUP', `net.Socket has no ${name}() on this Node version (node-internals.ts needs updating)`);
  }
  activityInstalled = true;
  for (const name of ['write', 'end', 'push', 'unshift', 'destroy']) {
    const orig = proto[name] as (...a: unknown[]) => unknown;
    proto[name] = function (this: Watched, ...args: unknown[]): unknown {
      const w = this[QUIET];
      if (w !== undefined && w !== UNWATCHED) moved(this);
      return orig.apply(this, args);
    };
  }
}

let kOnExecute: number | null | undefined;
/** The index of an HTTP parser's "bytes consumed" callback (HTTPParser.kOnExecute). */
function onExecuteKey(): number | null {
  if (kOnExecute === undefined) {
    try {
      const k = (createRequire(import.meta.url)('_http_common') as { HTTPParser?: { kOnExecute?: unknown } }).HTTPParser?.kOnExecute;
      kOnExecute = typeof k === 'number' ? k : null;
    } catch {
      kOnExecute = null;
    }
  }
  return kOnExecute;
}

/**
 * Watch `s` as index `i` of `w`. False when it cannot be watched (an HTTP connection whose
 * parser has no kOnExecute on this Node version): it must then be treated as moved.
 */
export function watchQuiet(s: net.Socket, w: QuietWatch, i: number): boolean {
  installActivity();
  const p = (s as unknown as { parser?: Record<number | symbol, unknown> | null }).parser;
  if (p) {
    const k = onExecuteKey();
    const f = k === null ? undefined : p[k];
    if (typeof f !== 'function') return false;
    // Node sets a new callback for each connection a pooled parser serves: wrap that one.
    if ((f as { [ON_EXECUTE_WRAP]?: net.Socket })[ON_EXECUTE_WRAP] !== s) {
      const wrapped = function (this: unknown, ...args: unknown[]): unknown {
        moved(s as Watched);
        return (f as (...a: unknown[]) => unknown).apply(this, args);
      } as ((...a: unknown[]) => unknown) & { [ON_EXECUTE_WRAP]?: net.Socket };
      wrapped[ON_EXECUTE_WRAP] = s;
      p[k!] = wrapped;
    }
  }
  const x = s as Watched;
  x[QUIET] = w;
  x[QUIET_AT] = i;
  return true;
}

/** Stop watching `s` (without counting it as moved). */
export function unwatchQuiet(s: net.Socket): void {
  const x = s as Watched;
  if (x[QUIET] !== undefined) x[QUIET] = UNWATCHED;
}

/** An idle connection: nothing read and not consumed, nothing unsent, not ending, no HTTP
 *  response in progress. */
export function isIdle(s: net.Socket): boolean {
  const x = s as unknown as SocketState & { _httpMessage?: unknown };
  const h = x._handle;
  return Boolean(h) && !x._readableState.destroyed && x._readableState.length === 0 && !x._readableState.endEmitted
    && x._writableState.length === 0 && !x._writableState.ending && h!.writeQueueSize === 0 && !x._httpMessage;
}

/** Bytes libuv has queued for a handle and not yet written (a C++ accessor). */
export function queuedBytes(h: StreamHandle): number {
  return h.writeQueueSize;
}

/** The socket still has handle `h` (not closed, not reconnected) and does not read. */
export function stillStopped(s: net.Socket, h: StreamHandle): boolean {
  return (s as unknown as SocketState)._handle === h && h.reading === false;
}

/**
 * The first socket of a scan that changed since (another handle or none: closed or reopened;
 * reading again; or bytes in userspace), skipping the indices marked in `skip` (the caller
 * checks those); -1 when none did.
 */
export function firstChanged(scan: { sockets: net.Socket[]; handles: StreamHandle[] }, skip: Uint8Array | null, from = 0): number {
  const { sockets, handles } = scan;
  for (let i = from; i < sockets.length; i++) {
    if (skip && skip[i]) continue;
    const s = sockets[i]!;
    const x = s as unknown as SocketState;
    if (!stillStopped(s, handles[i]!) || x._readableState.length !== 0 || x._writableState.length !== 0) return i;
  }
  return -1;
}


/** Bytes of `s`'s input this process has read out of the kernel. */
export function bytesConsumed(s: net.Socket): number {
  const h = (s as unknown as { _handle?: { bytesRead?: number } | null })._handle;
  return h?.bytesRead ?? s.bytesRead;
}

/** Bytes this process has written into the kernel for `s`: handed to libuv, less what libuv
 *  still queues. */
export function bytesWrittenToKernel(s: net.Socket): number {
  const x = s as unknown as { _bytesDispatched?: number; _handle?: StreamHandle | null };
  return (x._bytesDispatched ?? 0) - (x._handle?.writeQueueSize ?? 0);
}

/** end() reached the kernel: its FIN is queued or sent. */
export function finHandedOver(s: net.Socket): boolean {
  return (s as unknown as { _writableState: { finalCalled?: boolean } })._writableState.finalCalled === true;
}

/** Restart the socket's idle timeout, as activity would (after a pause, so that a timer that
 *  ran out while the event loop was stopped does not close it at once). */
export function refreshTimeout(s: net.Socket): void {
  (s as unknown as { _unrefTimer?: () => void })._unrefTimer?.();
}

/** Undo stopReading (CANCEL): libuv reads again and Node knows it. */
export function resumeReading(s: net.Socket): void {
  const h = (s as unknown as { _handle?: StreamHandle | null })._handle;
  if (!h || s.destroyed || !s.readable) return;
  if (!h.reading) {
    h.reading = true;
    h.readStart();
  }
}

/** Is libuv reading this socket (Node's view, which stopReading keeps true to libuv's)? */
export function isReading(s: net.Socket): boolean {
  return handleOf(s).reading === true;
}

/** A copy of the bytes read into userspace and not consumed yet, in order. */
export function readBuffered(s: net.Socket): Buffer {
  const st = (s as unknown as { _readableState: { buffer: unknown; bufferIndex?: number; length: number; objectMode: boolean; decoder: unknown } })._readableState;
  if (st.objectMode) throw fail('EINVAL', 'socket is in object mode');
  if (st.length === 0) return EMPTY;
  const chunks: Buffer[] = [];
  const buf = st.buffer as { head?: { data: Buffer; next: unknown } } | Buffer[];
  if (Array.isArray(buf)) {
    for (let i = st.bufferIndex ?? 0; i < buf.length; i++) chunks.push(toBuffer(buf[i]));
  } else if (buf && typeof buf === 'object' && 'head' in buf) {
    for (let n = buf.head as { data: Buffer; next: unknown } | null; n; n = n.next as typeof n) chunks.push(toBuffer(n.data));
  } else {
    throw fail('ENOTSUP', 'this Node version keeps a socket\'s read buffer in an unknown form (node-internals.ts needs updating)');
  }
  const out = Buffer.concat(chunks);
  if (out.length !== st.length) throw fail('EIO', `read buffer holds ${out.length} bytes but the stream counts ${st.length}`);
  return out;
}

function toBuffer(c: unknown): Buffer {
  if (Buffer.isBuffer(c)) return c;
  if (c instanceof Uint8Array) return Buffer.from(c.buffer, c.byteOffset, c.length);
  throw fail('EINVAL', 'socket has an encoding set (setEncoding): luo hands over bytes; set the encoding after restore');
}

/** True when the socket decodes to strings (setEncoding): its buffers cannot be carried as bytes. */
export function hasDecoder(s: net.Socket): boolean {
  return Boolean((s as unknown as { _readableState: { decoder: unknown } })._readableState.decoder);
}

/**
 * Give `s` now, as it is tracked, every property luo stores on a preserved connection later
 * (a watch, a hold epoch), each with a value of the kind it will hold: each connection then
 * keeps one shape for its whole life. Added in the baseline's pass instead, they gave 10 000
 * sockets a new shape under load, and each compiled function of Node's HTTP path that had
 * seen only the old one was deoptimized ("wrong map") right before the freeze.
 */
function primeSocket(s: net.Socket): void {
  const x = s as Watched & { [HOLD]?: number };
  if (x[QUIET] !== undefined) return;
  x[QUIET] = UNWATCHED;
  x[QUIET_AT] = 0;
  x[HOLD] = 0;
}

/** Remember each write handed to libuv until it completes, so its unsent tail can be carried. */
export function trackWrites(s: net.Socket): void {
  const t = s as Tracked;
  if (TRACKED in t) return;
  primeSocket(s);
  const h = (s as unknown as { _handle?: StreamHandle | null })._handle;
  if (h) handleFd(h); // read the fd now, not in the freeze's pass over every connection
  const proto = Object.getPrototypeOf(s) as { _writeGeneric?: WriteGeneric };
  if (typeof proto._writeGeneric !== 'function') throw fail('ENOTSUP', 'net.Socket has no _writeGeneric on this Node version (node-internals.ts needs updating)');
  t[TRACKED] = null;
  t._writeGeneric = function (this: Tracked, writev: boolean, data: unknown, encoding: string, cb: (err?: Error) => void) {
    const chunks = writev ? writevChunks(data) : [typeof data === 'string' ? Buffer.from(data, encoding as BufferEncoding) : toBuffer(data)];
    const rec: InFlight = { chunks, bytes: chunks.reduce((n, c) => n + c.length, 0) };
    this[TRACKED] = rec;
    return proto._writeGeneric!.call(this, writev, data, encoding, (err?: Error) => {
      if (this[TRACKED] === rec) this[TRACKED] = null;
      cb(err);
    });
  };
}

function writevChunks(data: unknown): Buffer[] {
  const arr = data as Array<{ chunk: unknown; encoding: string } | Buffer> & { allBuffers?: boolean };
  return arr.map((e) => (Buffer.isBuffer(e) || e instanceof Uint8Array ? toBuffer(e) : typeof e.chunk === 'string' ? Buffer.from(e.chunk, e.encoding as BufferEncoding) : toBuffer(e.chunk)));
}

export function untrackWrites(s: net.Socket): void {
  const t = s as Tracked;
  if (!(TRACKED in t)) return;
  delete t[TRACKED];
  delete t._writeGeneric;
}

/** Bytes written by the application that have not reached the kernel: libuv's unsent tail of
 *  the in-flight write, then Node's buffered writes. A copy. */
export function unsentBytes(s: net.Socket): Buffer {
  const t = s as Tracked;
  const parts: Buffer[] = [];
  const h = (s as unknown as { _handle?: StreamHandle | null })._handle;
  const queued = h ? h.writeQueueSize : 0;
  if (queued === 0 && s.writableLength === 0) return EMPTY; // the common case, without allocating
  if (queued > 0) {
    const rec = t[TRACKED];
    if (!rec) throw fail('EIO', `libuv holds ${queued} unsent bytes of a write luo did not see (trackWrites was not installed before it)`);
    const all = Buffer.concat(rec.chunks);
    if (queued > all.length) throw fail('EIO', `libuv holds ${queued} unsent bytes but the in-flight write had ${all.length}`);
    parts.push(all.subarray(all.length - queued));
  }
  const ws = (s as unknown as { _writableState: { getBuffer(): Array<{ chunk: unknown; encoding: string }> } })._writableState;
  for (const e of ws.getBuffer()) parts.push(typeof e.chunk === 'string' ? Buffer.from(e.chunk, e.encoding as BufferEncoding) : toBuffer(e.chunk));
  return Buffer.concat(parts);
}

type Holdable = net.Socket & { [HOLD]?: number; [HELD_QUEUE]?: Array<() => void> };
/** Hold epochs in force: a socket marked with one of them neither writes nor reads. */
const holding = new Set<number>();
/** Sockets that queued something while held, per epoch (released in order). */
const queued = new Map<number, Holdable[]>();
let nextEpoch = 1;
let holdInstalled = false;

/**
 * Wrap net.Socket.prototype's methods that a baseline (watchQuiet) and a hold (newHoldEpoch)
 * need, now: at boot, before the service has compiled anything. Installed at an update's
 * first baseline instead (under load, right before the freeze), the change to the prototype
 * deoptimized at once every compiled function on Node's HTTP path that reads through it (35
 * of them in the kv example: `--log-deopt`, "dependency-change"), and the service answered
 * in interpreted code through the baseline, the read ahead and the freeze. Where this Node
 * lacks one of them, nothing is wrapped here: the first baseline then fails with ENOTSUP,
 * as it did.
 */
export function hookSockets(): void {
  try {
    installHold();
    installActivity();
  } catch { /* ENOTSUP: said by the first baseline or snapshot */ }
}

/**
 * A new hold epoch, for one snapshot of connections. markHold(s, epoch) in the snapshot's pass
 * marks each (one property store); startHold(epoch) at the point of no return then holds them
 * all at once: from there nothing this process writes to them, nor their end(), reaches the
 * kernel, and nothing starts reading them again (an application timer, a heartbeat, a
 * stream's resume) while a successor owns them. endHold(epoch) (the update did not commit:
 * this process carries on) sends what was held, in order, and lets them read; on exit it all
 * vanishes. destroy() still closes this process's fd (the successor holds its own).
 */
export function newHoldEpoch(): number {
  installHold();
  return nextEpoch++;
}

export function markHold(s: net.Socket, epoch: number): void {
  (s as Holdable)[HOLD] = epoch;
}

export function startHold(epoch: number): void {
  holding.add(epoch);
}

export function endHold(epoch: number): void {
  if (!holding.delete(epoch)) return;
  const socks = queued.get(epoch);
  queued.delete(epoch);
  for (const s of socks ?? []) {
    const q = s[HELD_QUEUE]!;
    delete s[HELD_QUEUE];
    for (const f of q) f();
  }
}

/** Is `s` held now (startHold of its epoch)? */
export function outputHeld(s: net.Socket): boolean {
  const e = (s as Holdable)[HOLD];
  return e !== undefined && e !== 0 && holding.has(e);
}

/** Wrap net.Socket's write, final and read once per process (a Set lookup per call when no
 *  hold is in force). */
function installHold(): void {
  if (holdInstalled) return;
  const proto = netModule().Socket.prototype as unknown as Record<string, unknown>;
  if (typeof proto._writeGeneric !== 'function' || typeof proto._final !== 'function' || typeof proto._read !== 'function') {
    throw fail('ENOTSUP', 'net.Socket has no _writeGeneric/_final/_read on this Node version (node-internals.ts needs updating)');
  }
  holdInstalled = true;
  const wrap = (name: '_writeGeneric' | '_final' | '_read', replay: boolean): void => {
    const orig = proto[name] as (...a: unknown[]) => unknown;
    proto[name] = function (this: Holdable, ...args: unknown[]): unknown {
      const e = this[HOLD];
      if (e === undefined || holding.size === 0 || !holding.has(e)) return orig.apply(this, args);
      // Held: a write or an end waits (its callback with it); a read is asked for again at
      // release (the stream calls _read again only after a push).
      let q = this[HELD_QUEUE];
      if (!q) {
        q = this[HELD_QUEUE] = [];
        let list = queued.get(e);
        if (!list) queued.set(e, (list = []));
        list.push(this);
      }
      if (replay || q.every((f) => (f as { read?: true }).read !== true)) {
        const f = (() => orig.apply(this, args)) as (() => unknown) & { read?: true };
        if (!replay) f.read = true;
        q.push(f);
      }
      return undefined;
    };
  };
  wrap('_writeGeneric', true);
  wrap('_final', true);
  wrap('_read', false);
}

/**
 * An http.Server connection the server no longer parses: it gave the socket away ('upgrade',
 * a CONNECT) and freed its parser. A keep-alive connection between requests keeps its parser.
 */
export function leftHttp(s: net.Socket): boolean {
  return (s as unknown as { parser?: unknown }).parser == null;
}

/** Call `fn(event, args)` for each of `events` that `emitter` emits, before its listeners, without
 *  listening for them. Idempotent per emitter and function. */
export function observeEmits(emitter: NodeJS.EventEmitter, events: readonly string[], fn: (event: string, args: unknown[]) => void): void {
  const e = emitter as NodeJS.EventEmitter & { [OBSERVED]?: Set<(event: string, args: unknown[]) => void> };
  if (!e[OBSERVED]) {
    const fns = new Set<(event: string, args: unknown[]) => void>();
    const watched = new Set<string>();
    e[OBSERVED] = fns;
    const emit = e.emit;
    (e as unknown as { [OBSERVED_EVENTS]: Set<string> })[OBSERVED_EVENTS] = watched;
    e.emit = function (this: NodeJS.EventEmitter, event: string | symbol, ...args: unknown[]): boolean {
      if (typeof event === 'string' && watched.has(event)) for (const f of fns) f(event, args);
      return emit.call(this, event, ...args);
    };
  }
  for (const ev of events) (e as unknown as { [OBSERVED_EVENTS]: Set<string> })[OBSERVED_EVENTS].add(ev);
  e[OBSERVED]!.add(fn);
}
const OBSERVED = Symbol('luo.observed');
const OBSERVED_EVENTS = Symbol('luo.observedEvents');

/** net.Socket options: make no first read (the socket reads once someone wants its data). */
export const NO_FIRST_READ: Record<string, unknown> = { manualStart: true };

/** What the next image needs to make an upgrade request again. */
export interface RequestRecord { method: string; url: string; httpVersion: string; rawHeaders: string[] }

export function recordRequest(req: { method?: string; url?: string; httpVersion?: string; rawHeaders?: string[] }): RequestRecord {
  return { method: req.method ?? 'GET', url: req.url ?? '/', httpVersion: req.httpVersion ?? '1.1', rawHeaders: [...(req.rawHeaders ?? [])] };
}

/** The request of a carried upgraded connection, made again on its new socket, as Node's HTTP
 *  parser would have made it (headers lower-cased, repeated ones joined as Node joins them). */
export function incomingRequest(socket: net.Socket, r: RequestRecord): import('node:http').IncomingMessage {
  const req = new (httpModule().IncomingMessage)(socket);
  const [major, minor] = r.httpVersion.split('.').map(Number);
  Object.assign(req, { method: r.method, url: r.url, httpVersion: r.httpVersion, httpVersionMajor: major ?? 1, httpVersionMinor: minor ?? 1, upgrade: true, complete: true });
  // rawHeaders/headers are getters over internal fields on some versions: define them.
  const headers: Record<string, string | string[]> = {};
  for (let i = 0; i + 1 < r.rawHeaders.length; i += 2) {
    const k = r.rawHeaders[i]!.toLowerCase();
    const v = r.rawHeaders[i + 1]!;
    const had = headers[k];
    if (had === undefined) headers[k] = k === 'set-cookie' ? [v] : v;
    else if (Array.isArray(had)) had.push(v);
    else if (k === 'cookie') headers[k] = `${had}; ${v}`;
    else headers[k] = `${had}, ${v}`;
  }
  Object.defineProperty(req, 'rawHeaders', { value: [...r.rawHeaders], writable: true, configurable: true, enumerable: true });
  Object.defineProperty(req, 'headers', { value: headers, writable: true, configurable: true, enumerable: true });
  req.push(null); // no body: an upgrade request's body is the upgraded stream
  return req;
}

/** Bytes the application wrote that are not yet confirmed written (in flight + buffered). */
export function pendingWriteBytes(s: net.Socket): number {
  return s.writableLength;
}

/** A dgram.Socket's libuv handle (Node keeps it behind an internal "state symbol"). */
export function udpHandleOf(s: object): { fd: number; recvStop(): number; recvStart(): number } {
  const sym = Object.getOwnPropertySymbols(s).find((x) => x.description === 'state symbol');
  const h = sym ? (s as Record<symbol, { handle?: { fd: number; recvStop(): number; recvStart(): number } }>)[sym]?.handle : undefined;
  if (!h || typeof h.fd !== 'number' || h.fd < 0) throw fail('EBADF', 'dgram socket has no handle (not bound, or closed); this Node version may keep it elsewhere (node-internals.ts)');
  return h;
}

/** An http.Server connection that has a response in progress. */
export function httpBusy(s: net.Socket): boolean {
  return Boolean((s as unknown as { _httpMessage?: unknown })._httpMessage);
}

/** Count a socket as one of the server's connections, as net.Server's own accept path does. */
export function attachToServer(server: net.Server, s: net.Socket): void {
  const srv = server as unknown as { _connections: number };
  const sock = s as unknown as { server: net.Server; _server: net.Server };
  srv._connections++;
  sock.server = server;
  sock._server = server;
}

type GcFn = (o?: { type: 'minor' | 'major' }) => void;
let gcFn: GcFn | null | undefined;

/**
 * A full, synchronous garbage collection: V8's gc(), reached without --expose-gc on the
 * command line (the flag is set, the function taken from a new context, the flag unset again,
 * so nothing else sees it). A successor calls it before its handover, once it has mapped the
 * arena: a collection V8 started then would otherwise finish inside the pause. False where
 * this Node cannot do it (the caller goes on without).
 */
export function collectGarbage(): boolean {
  const gc = gcFunction();
  if (!gc) return false;
  gc();
  return true;
}

function gcFunction(): GcFn | null {
  if (gcFn === undefined) {
    const own = (globalThis as { gc?: unknown }).gc;
    if (typeof own === 'function') gcFn = own as GcFn;
    else {
      try {
        v8.setFlagsFromString('--expose-gc');
        const f = vm.runInNewContext('gc') as unknown;
        gcFn = typeof f === 'function' ? (f as GcFn) : null;
      } catch {
        gcFn = null;
      } finally {
        try {
          v8.setFlagsFromString('--no-expose-gc');
        } catch { /* the flag stays: harmless */ }
      }
    }
  }
  return gcFn ?? null;
}

/**
 * A minor (young-generation) collection now, where collectGarbage could reach gc(): a
 * scavenge copies what survives since the last one, so one made after every few ms of
 * allocation copies little (well under a millisecond), where one V8 starts on its own, with
 * its young generation full of objects that all survive, stood still for 20-30 ms. False
 * where this Node cannot (nothing is done).
 */
export function collectYoung(): boolean {
  const gc = gcFunction();
  if (!gc) return false;
  gc({ type: 'minor' });
  return true;
}
