/*
 * handlers/connection: established TCP/Unix connections across an update, exactly once in both
 * directions. Shared by the single-socket handler (socket.ts) and the server helper (server.ts).
 *
 * Outgoing, per connection:
 *   preserve     trackWrites (so the unsent tail of an in-flight write can be found later)
 *   FREEZE       stopReading (libuv, not just the stream), then wait until the application's
 *                writes have reached the kernel, up to a deadline shared by all connections
 *   snapshot     synchronously at the end of FREEZE: copy the bytes read but not consumed,
 *                and the bytes written but not sent (only when the deadline passed: with
 *                onUndrained 'carry'; with 'fail' the FREEZE fails with ETIMEDOUT instead and
 *                the update is cancelled, nothing lost). They go into one table in preserved
 *                memory.
 *   verify       right before execve: nothing was read or written since the snapshot
 *   CANCEL       resumeReading: the socket carries on as if nothing happened
 * Incoming (adopt): new net.Socket on the same fd (same peer), the carried unread bytes put in
 * front of its read buffer, the carried unsent bytes written before anything else.
 *
 * Table format ("connections-v1", little-endian, in preserved arena memory):
 *   header 32 B: magic "LUOC", version 1, count u32, flags u32, total size u64, extra u64
 *   entries 24 B each: fd u32, flags u32, unread u32, unsent u32, data offset u64
 *   data: for each entry, its unread bytes then its unsent bytes
 */
import net from 'node:net';
import { fail } from '../errors.js';
import type { Luo } from '../luo/luo.js';
import { fdOf, pendingWriteBytes, readBuffered, resumeReading, stopReading, trackWrites, unsentBytes, untrackWrites } from './node-internals.js';

export type OnUndrained = 'carry' | 'fail';

export interface ConnectionOptions {
  /** How long FREEZE waits for written bytes to reach the kernel (default 2000 ms). */
  drainTimeoutMs?: number;
  /** When the deadline passes: carry the unsent bytes (default) or fail the update. */
  onUndrained?: OnUndrained;
}

export const F_WRITE_ENDED = 1;
export const F_READ_ENDED = 2;
const MAGIC = 0x434f554c; // "LUOC"
const HEADER = 32;
const ENTRY = 24;

const EMPTY = Buffer.alloc(0);

export interface Carried { fd: number; flags: number; unread: Buffer; unsent: Buffer }

/** What the snapshot saw, to verify nothing moved before exec. */
export interface Seen { socket: net.Socket; readable: number; writable: number; queued: number }

export function prepareConnection(s: net.Socket): void {
  if (s.destroyed) throw fail('EBADF', 'socket is destroyed');
  if (s.connecting) throw fail('EAGAIN', 'socket is still connecting');
  fdOf(s);
  trackWrites(s);
}

export function releaseConnection(s: net.Socket): void {
  untrackWrites(s);
}

/** Stop reading every connection, then wait (one shared deadline) for their writes to drain. */
export async function freezeConnections(sockets: Iterable<net.Socket>, opts: ConnectionOptions = {}): Promise<net.Socket[]> {
  const list = [...sockets].filter((s) => !s.destroyed);
  for (const s of list) stopReading(s);
  const deadline = Date.now() + (opts.drainTimeoutMs ?? 2000);
  let pending = list.filter((s) => pendingWriteBytes(s) > 0);
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

/** Synchronous capture of one connection. */
export function snapshotConnection(s: net.Socket): { carried: Carried; seen: Seen } {
  stopReading(s); // a connection accepted during FREEZE was never stopped
  const h = (s as unknown as { _handle: { writeQueueSize: number } })._handle;
  const carried: Carried = {
    fd: fdOf(s),
    flags: (s.writableEnded ? F_WRITE_ENDED : 0) | (s.readableEnded ? F_READ_ENDED : 0),
    unread: readBuffered(s),
    unsent: unsentBytes(s),
  };
  return { carried, seen: { socket: s, readable: s.readableLength, writable: s.writableLength, queued: h.writeQueueSize } };
}

export function verifyUnchanged(seen: Seen[]): void {
  for (const x of seen) {
    const h = (x.socket as unknown as { _handle: { writeQueueSize: number } | null })._handle;
    if (!h || x.socket.readableLength !== x.readable || x.socket.writableLength !== x.writable || h.writeQueueSize !== x.queued) {
      throw fail('EBUSY', `connection fd ${x.socket.destroyed ? '?' : fdOf(x.socket)} was read, written or closed after its snapshot`);
    }
  }
}

/** Write a connections table into fresh preserved memory; returns its address. */
export function writeTable(luo: Luo, conns: Carried[], flags = 0, extra = 0n): number {
  const data = conns.reduce((n, c) => n + c.unread.length + c.unsent.length, 0);
  const size = HEADER + ENTRY * conns.length + data;
  const addr = luo.allocPreserve(size);
  const v = luo.view(addr, size);
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, 1, true);
  dv.setUint32(8, conns.length, true);
  dv.setUint32(12, flags, true);
  dv.setBigUint64(16, BigInt(size), true);
  dv.setBigUint64(24, extra, true);
  let off = HEADER + ENTRY * conns.length;
  conns.forEach((c, i) => {
    const e = HEADER + ENTRY * i;
    dv.setUint32(e, c.fd, true);
    dv.setUint32(e + 4, c.flags, true);
    dv.setUint32(e + 8, c.unread.length, true);
    dv.setUint32(e + 12, c.unsent.length, true);
    dv.setBigUint64(e + 16, BigInt(off), true);
    v.set(c.unread, off);
    v.set(c.unsent, off + c.unread.length);
    off += c.unread.length + c.unsent.length;
  });
  return addr;
}

/** Read a connections table handed over at `addr`, copy it out and free its memory. EIO if malformed. */
export function readTable(luo: Luo, addr: number): { conns: Carried[]; flags: number; extra: bigint } {
  const size = luo.restoreMemory(addr);
  try {
    const v = luo.view(addr, size);
    const dv = new DataView(v.buffer, v.byteOffset, v.length);
    if (size < HEADER || dv.getUint32(0, true) !== MAGIC || dv.getUint32(4, true) !== 1) throw fail('EIO', `no connections-v1 table at ${addr}`);
    const count = dv.getUint32(8, true);
    const total = Number(dv.getBigUint64(16, true));
    if (total > size || HEADER + ENTRY * count > total) throw fail('EIO', `connections table at ${addr} claims ${count} entries in ${total} bytes`);
    const conns: Carried[] = [];
    for (let i = 0; i < count; i++) {
      const e = HEADER + ENTRY * i;
      const unread = dv.getUint32(e + 8, true);
      const unsent = dv.getUint32(e + 12, true);
      const off = Number(dv.getBigUint64(e + 16, true));
      if (off + unread + unsent > total) throw fail('EIO', `connection ${i} of the table at ${addr} runs past its end`);
      conns.push({
        fd: luo.kho.incomingFd(dv.getUint32(e, true)),
        flags: dv.getUint32(e + 4, true),
        unread: unread ? Buffer.from(v.subarray(off, off + unread)) : EMPTY,
        unsent: unsent ? Buffer.from(v.subarray(off + unread, off + unread + unsent)) : EMPTY,
      });
    }
    return { conns, flags: dv.getUint32(12, true), extra: dv.getBigUint64(24, true) };
  } finally {
    luo.kho.free(addr, size);
  }
}

/** Next image: a net.Socket on the carried fd, with the carried bytes delivered first. */
export function adoptConnection(c: Carried, opts: { allowHalfOpen?: boolean } = {}): net.Socket {
  const s = new net.Socket({ fd: c.fd, readable: true, writable: true, allowHalfOpen: opts.allowHalfOpen ?? false });
  if (c.unread.length) s.unshift(c.unread);
  if (c.unsent.length) s.write(c.unsent);
  if (c.flags & F_WRITE_ENDED) s.end();
  return s;
}
