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
import {
  READ_ENDED, WRITE_ENDED, fdOf, firstChanged, pendingWriteBytes, queuedBytes, readBuffered, resumeReading, scanSockets, stillStopped,
  stopAll, trackWrites, unsentBytes, untrackWrites, type StreamHandle,
} from './node-internals.js';

export type OnUndrained = 'carry' | 'fail';

export interface ConnectionOptions {
  /** How long FREEZE waits for written bytes to reach the kernel (default 2000 ms). */
  drainTimeoutMs?: number;
  /** When the deadline passes: carry the unsent bytes (default) or fail the update. */
  onUndrained?: OnUndrained;
}

export const F_WRITE_ENDED = WRITE_ENDED;
export const F_READ_ENDED = READ_ENDED;
const MAGIC = 0x434f554c; // "LUOC"
const HEADER = 32;
const ENTRY = 24;

const EMPTY = Buffer.alloc(0);

export interface Carried { fd: number; flags: number; unread: Buffer; unsent: Buffer }

/** A connection with bytes in userspace at the snapshot: the bytes, and the lengths verify compares. */
interface WithBytes { unread: Buffer; unsent: Buffer; readable: number; writable: number; queued: number }

/** What a snapshot took of a set of connections (parallel arrays: one index per connection). */
export class ConnSnapshot {
  readonly sockets: net.Socket[];
  /** Each socket's libuv handle at the snapshot: the key of its fd (it dies with the fd). */
  readonly handles: StreamHandle[];
  readonly fds: number[];
  readonly flags: number[];
  /** Only the connections that had bytes in userspace, by index. */
  readonly withBytes = new Map<number, WithBytes>();

  constructor(scan: { sockets: net.Socket[]; handles: StreamHandle[]; fds: number[]; flags: number[] }) {
    this.sockets = scan.sockets;
    this.handles = scan.handles;
    this.fds = scan.fds;
    this.flags = scan.flags;
  }

  get count(): number {
    return this.sockets.length;
  }
}

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
 * accepted during FREEZE was never stopped: it stops here.
 */
export function snapshotConnections(sockets: Iterable<net.Socket>): ConnSnapshot {
  const scan = scanSockets(sockets, true);
  const snap = new ConnSnapshot(scan);
  for (const i of scan.busy) {
    const s = scan.sockets[i]!;
    snap.withBytes.set(i, { unread: readBuffered(s), unsent: unsentBytes(s), readable: s.readableLength, writable: s.writableLength, queued: queuedBytes(scan.handles[i]!) });
  }
  return snap;
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
  const i = firstChanged(snap, skip);
  if (i >= 0) changed(i);
}

/** Write a snapshot's connections table into fresh preserved memory; returns its address. */
export function writeTable(luo: Luo, snap: ConnSnapshot, flags = 0, extra = 0n): number {
  const count = snap.count;
  let data = 0;
  for (const b of snap.withBytes.values()) data += b.unread.length + b.unsent.length;
  const size = HEADER + ENTRY * count + data;
  const addr = luo.allocPreserve(size);
  const v = luo.view(addr, size);
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, 1, true);
  dv.setUint32(8, count, true);
  dv.setUint32(12, flags, true);
  dv.setBigUint64(16, BigInt(size), true);
  dv.setBigUint64(24, extra, true);
  // Fresh arena memory reads as zeros (allocPreserve never hands out a used page): an idle
  // entry needs only its fd and flags; unread, unsent and offset stay 0.
  const { fds, flags: connFlags } = snap;
  for (let i = 0; i < count; i++) {
    const e = HEADER + ENTRY * i;
    dv.setUint32(e, fds[i]!, true);
    if (connFlags[i]) dv.setUint32(e + 4, connFlags[i]!, true);
  }
  let off = HEADER + ENTRY * count;
  for (const [i, b] of snap.withBytes) {
    const e = HEADER + ENTRY * i;
    dv.setUint32(e + 8, b.unread.length, true);
    dv.setUint32(e + 12, b.unsent.length, true);
    dv.setUint32(e + 16, off % 2 ** 32, true); // u64, as two halves (no BigInt per entry)
    dv.setUint32(e + 20, Math.floor(off / 2 ** 32), true);
    v.set(b.unread, off);
    v.set(b.unsent, off + b.unread.length);
    off += b.unread.length + b.unsent.length;
  }
  return addr;
}

/** A connections table as the next image reads it: flat arrays, bytes only where carried. */
export class CarriedTable {
  /** This process's fd of each connection. */
  readonly fds: Int32Array;
  readonly flags: Uint32Array;
  /** The carried bytes, only for the connections that have any, by index. */
  readonly bytes = new Map<number, { unread: Buffer; unsent: Buffer }>();

  constructor(count: number) {
    this.fds = new Int32Array(count);
    this.flags = new Uint32Array(count);
  }

  get count(): number {
    return this.fds.length;
  }

  /** Connection i as adoptConnection takes it. */
  at(i: number): Carried {
    const b = this.bytes.get(i);
    return { fd: this.fds[i]!, flags: this.flags[i]!, unread: b?.unread ?? EMPTY, unsent: b?.unsent ?? EMPTY };
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

/** Read a connections table handed over at `addr`, copy it out and free its memory. EIO if malformed. */
export function readTable(luo: Luo, addr: number): { table: CarriedTable; flags: number; extra: bigint } {
  const size = luo.restoreMemory(addr);
  try {
    const v = luo.view(addr, size);
    const dv = new DataView(v.buffer, v.byteOffset, v.length);
    if (size < HEADER || dv.getUint32(0, true) !== MAGIC || dv.getUint32(4, true) !== 1) throw fail('EIO', `no connections-v1 table at ${addr}`);
    const count = dv.getUint32(8, true);
    const total = Number(dv.getBigUint64(16, true));
    if (total > size || HEADER + ENTRY * count > total) throw fail('EIO', `connections table at ${addr} claims ${count} entries in ${total} bytes`);
    const table = new CarriedTable(count);
    const kho = luo.kho;
    for (let i = 0; i < count; i++) {
      const e = HEADER + ENTRY * i;
      table.fds[i] = kho.incomingFd(dv.getUint32(e, true));
      table.flags[i] = dv.getUint32(e + 4, true);
      const unread = dv.getUint32(e + 8, true);
      const unsent = dv.getUint32(e + 12, true);
      if (unread === 0 && unsent === 0) continue;
      const off = dv.getUint32(e + 16, true) + dv.getUint32(e + 20, true) * 2 ** 32;
      if (off + unread + unsent > total) throw fail('EIO', `connection ${i} of the table at ${addr} runs past its end`);
      table.bytes.set(i, {
        unread: unread ? Buffer.from(v.subarray(off, off + unread)) : EMPTY,
        unsent: unsent ? Buffer.from(v.subarray(off + unread, off + unread + unsent)) : EMPTY,
      });
    }
    return { table, flags: dv.getUint32(12, true), extra: dv.getBigUint64(24, true) };
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
