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
 *   socket._writeGeneric                  wrapped per socket to remember the in-flight write,
 *                                         whose unsent tail is the last writeQueueSize bytes
 *
 * Lifecycle for a preserved socket: trackWrites() at preserve time → stopReading() at FREEZE
 * → snapshot (readBuffered, unsentBytes) synchronously at the end of FREEZE (nothing runs
 * between it and the exec) → resumeReading() if the update is cancelled. The snapshot only
 * copies: on exec the old image's buffers vanish anyway, and on CANCEL nothing needs putting
 * back.
 */
import type net from 'node:net';
import { fail } from '../errors.js';

interface StreamHandle {
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
  const h = handleOf(s);
  if (h.reading !== false) {
    h.reading = false;
    h.readStop();
  }
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

/** Remember each write handed to libuv until it completes, so its unsent tail can be carried. */
export function trackWrites(s: net.Socket): void {
  const t = s as Tracked;
  if (TRACKED in t) return;
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
