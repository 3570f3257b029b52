/*
 * uapi/connections: the connections table, the payload a connection-carrying file handler
 * (server-v2, socket-v2) leaves in preserved memory for the next image. Pure: no I/O.
 *
 * v2, written by this luo (little-endian; the payload is the table's arena address):
 *   header 32 B   magic "LUOC" u32 · version u32 (2) · count u32 · flags u32 (bit 0: it was an
 *                 http.Server) · size u64 (the whole table) · first u32 (index, in the token's
 *                 fd list, of connection 0's fd: connection i is fd first + i) · checksum u32
 *                 (CRC-32 of the table with this field 0)
 *   entry i 40 B  flags u32 (WRITE_ENDED 1: end() was called; READ_ENDED 2; FIN_SENT 4: the FIN
 *                 reached the kernel; UPGRADED 8: the HTTP server no longer parses it, e.g. a
 *                 WebSocket: it must never go back to an HTTP parser) · unread u32 · unsent u32
 *                 · meta u32 · data offset u64 · rx u64 · tx u64
 *   data          for each entry with bytes: its unread bytes, its unsent bytes, then its meta
 *                 (what the connection's owner needs to take it back: for an upgraded one,
 *                 JSON, see handlers/upgraded.ts). A reader of an earlier v2 saw meta as 0.
 * rx and tx: bytes of the connection's input consumed (read out of the kernel) and of its
 * output written into the kernel, over the connection's life, at the snapshot. For TCP they
 * are what TCP_INFO and SIOCINQ/SIOCOUTQ say now (docs/handlers.md: how a previous version
 * tells whether the next one touched a connection). U64_UNKNOWN: not known.
 * Fresh arena memory reads as zeros, so an idle entry costs its flags and two counters.
 *
 * v1 (read only; images of luo 0.1): header 32 B magic · version 1 · count · flags · size u64 ·
 *   the listener's fd u64 (the previous image's number); entry 24 B: fd u32 (the previous
 *   image's number) · flags · unread · unsent · offset u64. No checksum, no counters.
 */
import { crc32Skipping } from './crc.js';

export const TABLE_MAGIC = 0x434f554c; // "LUOC"
export const TABLE_HEADER = 32;
export const ENTRY_V1 = 24;
export const ENTRY_V2 = 40;
export const WRITE_ENDED = 1;
export const READ_ENDED = 2;
export const FIN_SENT = 4;
export const UPGRADED = 8;
export const TABLE_HTTP = 1;
/** rx/tx when not known (the connection came from somewhere luo did not see). */
export const UNKNOWN = 2 ** 53 - 1;

const EMPTY = Buffer.alloc(0);
const NONE: readonly number[] = [];

/** What a snapshot writes: parallel per-connection data, bytes only where there are some. */
export interface TableSource {
  count: number;
  flags: number;
  first: number;
  connFlags: ArrayLike<number>;
  rx: ArrayLike<number>;
  tx: ArrayLike<number>;
  /** Connection index → the bytes it carries (meta: its owner's, for an upgraded one). */
  bytes: ReadonlyMap<number, { unread: Uint8Array; unsent: Uint8Array; meta?: Uint8Array }>;
  /** The last entries already encoded (idle connections: no bytes; encodeEntries made
   *  them), copied as they are but for those at the indices `skip` (ascending: connections
   *  that moved since, described before them); connFlags, rx and tx describe the entries
   *  before them. */
  encoded?: Uint32Array;
  skip?: readonly number[];
}

/** Entry words (ENTRY_V2 / 4 per connection) of idle connections: flags, rx and tx only. */
export function encodeEntries(connFlags: ArrayLike<number>, rx: ArrayLike<number>, tx: ArrayLike<number>, count: number): Uint32Array {
  const w = new Uint32Array(W * count);
  for (let i = 0, e = 0; i < count; i++, e += W) {
    w[e] = connFlags[i]!;
    const r = rx[i]!;
    w[e + 6] = r % 4294967296;
    w[e + 7] = Math.floor(r / 4294967296);
    const x = tx[i]!;
    w[e + 8] = x % 4294967296;
    w[e + 9] = Math.floor(x / 4294967296);
  }
  return w;
}

/**
 * Copy `src` (`per` elements per entry: ENTRY_V2 / 4 words for encodeEntries' output) into
 * `dst` from element `at`, without the entries at the indices `sorted` (ascending, each once):
 * one block copy per run between them. How many elements it wrote.
 */
export function copyWithout<A extends Int32Array | Uint8Array | Uint32Array>(src: A, per: number, sorted: readonly number[], dst: A, at: number): number {
  const count = src.length / per;
  let from = 0;
  let to = at;
  for (let k = 0; k < sorted.length; k++) {
    const i = sorted[k]!;
    if (i > from) {
      dst.set(src.subarray(per * from, per * i), to);
      to += per * (i - from);
    }
    from = i + 1;
  }
  if (from < count) {
    dst.set(src.subarray(per * from), to);
    to += per * (count - from);
  }
  return to - at;
}

/** The table's entries as 32-bit words (the arena is page-aligned and the host little-endian). */
const words = (v: Uint8Array, from: number, n: number): Uint32Array => (
  (v.byteOffset + from) % 4 === 0 ? new Uint32Array(v.buffer, v.byteOffset + from, n) : new Uint32Array(v.slice(from, from + 4 * n).buffer)
);
const LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const W = ENTRY_V2 / 4;

export function tableSize(t: Pick<TableSource, 'count' | 'bytes'>): number {
  let data = 0;
  for (const b of t.bytes.values()) data += b.unread.length + b.unsent.length + (b.meta?.length ?? 0);
  return TABLE_HEADER + ENTRY_V2 * t.count + data;
}

/**
 * The table's checksum: CRC-32 of its bytes with the checksum field counted as zero (native:
 * ~0.2 ms for the ~400 KB table of 10 000 connections), so that any flipped byte is seen.
 */
export function tableChecksum(v: Uint8Array): number {
  return crc32Skipping(v, 28);
}

const setU64 = (dv: DataView, at: number, n: number): void => {
  dv.setUint32(at, n % 2 ** 32, true);
  dv.setUint32(at + 4, Math.floor(n / 2 ** 32), true);
};
const getU64 = (dv: DataView, at: number): number => dv.getUint32(at, true) + dv.getUint32(at + 4, true) * 2 ** 32;


/** Write a v2 table into `v` (tableSize bytes of fresh, zeroed preserved memory). */
export function encodeTable(v: Uint8Array, t: TableSource): void {
  if (!LITTLE) throw new Error('luo: the connections table is little-endian, and so must the host be');
  const size = v.length;
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  dv.setUint32(0, TABLE_MAGIC, true);
  dv.setUint32(4, 2, true);
  dv.setUint32(8, t.count, true);
  dv.setUint32(12, t.flags, true);
  setU64(dv, 16, size);
  dv.setUint32(24, t.first, true);
  // Entries as words: an idle connection writes nothing but its non-zero fields.
  const w = new Uint32Array(v.buffer, v.byteOffset + TABLE_HEADER, W * t.count);
  const { connFlags, rx, tx } = t;
  const skip = t.skip ?? NONE;
  const own = t.count - (t.encoded ? t.encoded.length / W - skip.length : 0);
  if (t.encoded) copyWithout(t.encoded, W, skip, w, W * own);
  for (let i = 0, e = 0; i < own; i++, e += W) {
    const f = connFlags[i]!;
    if (f) w[e] = f;
    const r = rx[i]!;
    if (r) {
      w[e + 6] = r % 4294967296;
      w[e + 7] = Math.floor(r / 4294967296);
    }
    const x = tx[i]!;
    if (x) {
      w[e + 8] = x % 4294967296;
      w[e + 9] = Math.floor(x / 4294967296);
    }
  }
  let off = TABLE_HEADER + ENTRY_V2 * t.count;
  for (const [i, b] of t.bytes) {
    const e = W * i;
    const meta = b.meta?.length ?? 0;
    w[e + 1] = b.unread.length;
    w[e + 2] = b.unsent.length;
    w[e + 3] = meta;
    w[e + 4] = off % 4294967296;
    w[e + 5] = Math.floor(off / 4294967296);
    v.set(b.unread, off);
    v.set(b.unsent, off + b.unread.length);
    if (meta) v.set(b.meta!, off + b.unread.length + b.unsent.length);
    off += b.unread.length + b.unsent.length + meta;
  }
  dv.setUint32(28, tableChecksum(v), true);
}

/** The size a table's header claims (to free it); 0 when it is not a table. */
export function tableSizeAt(header: Uint8Array): number {
  const dv = new DataView(header.buffer, header.byteOffset, header.length);
  if (header.length < TABLE_HEADER || dv.getUint32(0, true) !== TABLE_MAGIC) return 0;
  return getU64(dv, 16);
}

/** A table as the next image reads it (a copy: the arena memory can be freed at once). */
export interface DecodedTable {
  version: 1 | 2;
  count: number;
  flags: number;
  /** v2: index of connection 0's fd in the token's fd list. */
  first: number;
  connFlags: Uint32Array;
  /** Only when asked for (decodeTable's `counters`): UNKNOWN for a v1 table. */
  rx: Float64Array | null;
  tx: Float64Array | null;
  /** v1 only: each connection's fd as the previous image numbered it, and the listener's. */
  oldFds: Uint32Array | null;
  oldListenerFd: number;
  bytes: Map<number, CarriedBytes>;
}

/** What one connection carries besides its fd (meta: empty unless its owner wrote some). */
export interface CarriedBytes { unread: Buffer; unsent: Buffer; meta: Buffer }

/**
 * Decode a table of `v.length` bytes; the reason it is malformed, as a string, otherwise.
 * `counters`: read rx and tx too (only a previous version resuming needs them).
 */
export function decodeTable(v: Uint8Array, opts: { counters?: boolean } = {}): DecodedTable | string {
  const size = v.length;
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  if (size < TABLE_HEADER || dv.getUint32(0, true) !== TABLE_MAGIC) return 'no connections table here';
  const version = dv.getUint32(4, true);
  if (version !== 1 && version !== 2) return `connections table version ${version} (this image reads 1 and 2)`;
  const count = dv.getUint32(8, true);
  const total = getU64(dv, 16);
  const entry = version === 1 ? ENTRY_V1 : ENTRY_V2;
  if (total > size || TABLE_HEADER + entry * count > total) return `the table claims ${count} entries in ${total} bytes`;
  if (version === 2) {
    const want = dv.getUint32(28, true);
    const got = tableChecksum(v.subarray(0, total));
    if (got !== want) return `the table's checksum is ${got.toString(16)}, ${want.toString(16)} was written: it was damaged`;
  }
  const counters = opts.counters ?? false;
  const t: DecodedTable = {
    version, count, flags: dv.getUint32(12, true), first: version === 2 ? dv.getUint32(24, true) : 0,
    connFlags: new Uint32Array(count), rx: counters ? new Float64Array(count) : null, tx: counters ? new Float64Array(count) : null,
    oldFds: version === 1 ? new Uint32Array(count) : null, oldListenerFd: version === 1 ? getU64(dv, 24) : -1,
    bytes: new Map(),
  };
  const ew = entry / 4;
  const w = words(v, TABLE_HEADER, ew * count);
  // v1 entry: fd, flags, unread, unsent, offset u64. v2: flags, unread, unsent, meta, offset, rx, tx.
  const at = version === 1 ? 1 : 0;
  for (let i = 0, e = 0; i < count; i++, e += ew) {
    if (version === 1) t.oldFds![i] = w[e]!;
    t.connFlags[i] = w[e + at]!;
    const unread = w[e + at + 1]!;
    const unsent = w[e + at + 2]!;
    if (counters) {
      t.rx![i] = version === 1 ? UNKNOWN : w[e + 6]! + w[e + 7]! * 4294967296;
      t.tx![i] = version === 1 ? UNKNOWN : w[e + 8]! + w[e + 9]! * 4294967296;
    }
    const meta = version === 2 ? w[e + 3]! : 0;
    if (unread === 0 && unsent === 0 && meta === 0) continue;
    const off = w[e + 4]! + w[e + 5]! * 4294967296;
    if (off + unread + unsent + meta > total) return `connection ${i} runs past the table's end`;
    t.bytes.set(i, {
      unread: unread ? Buffer.from(v.subarray(off, off + unread)) : EMPTY,
      unsent: unsent ? Buffer.from(v.subarray(off + unread, off + unread + unsent)) : EMPTY,
      meta: meta ? Buffer.from(v.subarray(off + unread + unsent, off + unread + unsent + meta)) : EMPTY,
    });
  }
  return t;
}
