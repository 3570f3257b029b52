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
 * v3, written instead of v2 for a successor that reads base blocks (it said ahead-v1: see
 * uapi/handover.ts): the connections that were idle when the server took its baseline (before
 * the freeze) are not in the table but in a base block written then, which the successor read
 * before the freeze; the table holds only what moved since, and which of the block's
 * connections are not carried after all.
 *   header 56 B   v2's 32 B (count: this table's own entries) · base u64 (the base block's
 *                 arena address; 0: none) · baseCount u32 (its entries) · moved u32 (how many of
 *                 them are not carried) · baseChecksum u32 (the block's own checksum, which the
 *                 reader compares with the block it read) · reserved u32 (0)
 *   entry i 40 B  as v2, for connection i < count
 *   moved         `moved` u32: indices into the base block, ascending, each once
 *   data          as v2
 *   Connection count + r is the r-th entry of the base block that is not in `moved`: the
 *   table names count + baseCount - moved connections, connection i is fd first + i.
 * The base block ("LUOB" v1): written once, never changed after, freed by whoever reads it.
 *   header 16 B   magic "LUOB" u32 · version u32 (1) · count u32 · checksum u32 (CRC-32 of the
 *                 block with this field 0)
 *   entry j 16 B  rx u64 · tx u64 (an idle connection: no flags, no bytes carried)
 *
 * v1 (read only; images of luo 0.1): header 32 B magic · version 1 · count · flags · size u64 ·
 *   the listener's fd u64 (the previous image's number); entry 24 B: fd u32 (the previous
 *   image's number) · flags · unread · unsent · offset u64. No checksum, no counters.
 */
import { crc32Skipping } from './crc.js';

export const TABLE_MAGIC = 0x434f554c; // "LUOC"
export const TABLE_HEADER = 32;
/** A v3 table's header (v2's and the base block's reference). */
export const TABLE_HEADER_V3 = 56;
export const BLOCK_MAGIC = 0x424f554c; // "LUOB"
export const BLOCK_HEADER = 16;
export const BLOCK_ENTRY = 16;
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
  /** v3: the base block the table refers to (its arena address, entry count and checksum),
   *  and the indices of its connections not carried (ascending, each once). `count` and the
   *  per-connection data then describe only the table's own entries. */
  base?: { addr: number; count: number; checksum: number; moved: readonly number[] };
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

export function tableSize(t: Pick<TableSource, 'count' | 'bytes' | 'base'>): number {
  let data = 0;
  for (const b of t.bytes.values()) data += b.unread.length + b.unsent.length + (b.meta?.length ?? 0);
  return dataOffset(t) + data;
}

/** Where a table's carried bytes begin: after its header, its entries and its moved list. */
const dataOffset = (t: Pick<TableSource, 'count' | 'base'>): number => (t.base ? TABLE_HEADER_V3 + ENTRY_V2 * t.count + 4 * t.base.moved.length : TABLE_HEADER + ENTRY_V2 * t.count);

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


/** Write a v2 table (v3 with `base`) into `v` (tableSize bytes of fresh, zeroed preserved memory). */
export function encodeTable(v: Uint8Array, t: TableSource): void {
  if (!LITTLE) throw new Error('luo: the connections table is little-endian, and so must the host be');
  const size = v.length;
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  const base = t.base;
  dv.setUint32(0, TABLE_MAGIC, true);
  dv.setUint32(4, base ? 3 : 2, true);
  dv.setUint32(8, t.count, true);
  dv.setUint32(12, t.flags, true);
  setU64(dv, 16, size);
  dv.setUint32(24, t.first, true);
  const header = base ? TABLE_HEADER_V3 : TABLE_HEADER;
  if (base) {
    setU64(dv, 32, base.addr);
    dv.setUint32(40, base.count, true);
    dv.setUint32(44, base.moved.length, true);
    dv.setUint32(48, base.checksum, true);
    const m = new Uint32Array(v.buffer, v.byteOffset + header + ENTRY_V2 * t.count, base.moved.length);
    for (let k = 0; k < base.moved.length; k++) m[k] = base.moved[k]!;
  }
  // Entries as words: an idle connection writes nothing but its non-zero fields.
  const w = new Uint32Array(v.buffer, v.byteOffset + header, W * t.count);
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
  let off = dataOffset(t);
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
  version: 1 | 2 | 3;
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
  /** v3: the base block the table refers to, and which of its connections are not carried
   *  (ascending); null otherwise. `count` and the arrays above are the table's own entries. */
  base: { addr: number; count: number; checksum: number; moved: Uint32Array } | null;
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
  if (version !== 1 && version !== 2 && version !== 3) return `connections table version ${version} (this image reads 1 to 3)`;
  const count = dv.getUint32(8, true);
  const total = getU64(dv, 16);
  const entry = version === 1 ? ENTRY_V1 : ENTRY_V2;
  const header = version === 3 ? TABLE_HEADER_V3 : TABLE_HEADER;
  if (total > size || header > total || header + entry * count > total) return `the table claims ${count} entries in ${total} bytes`;
  let base: DecodedTable['base'] = null;
  if (version === 3) {
    const moved = dv.getUint32(44, true);
    if (header + entry * count + 4 * moved > total) return `the table claims ${count} entries and ${moved} moved in ${total} bytes`;
  }
  if (version >= 2) {
    const want = dv.getUint32(28, true);
    const got = tableChecksum(v.subarray(0, total));
    if (got !== want) return `the table's checksum is ${got.toString(16)}, ${want.toString(16)} was written: it was damaged`;
  }
  if (version === 3) {
    const addr = getU64(dv, 32);
    const baseCount = dv.getUint32(40, true);
    const m = words(v, header + entry * count, dv.getUint32(44, true)).slice();
    for (let k = 0; k < m.length; k++) {
      if (m[k]! >= baseCount || (k > 0 && m[k]! <= m[k - 1]!)) return `the table's moved list is not ascending indices of its ${baseCount} base entries`;
    }
    if (addr === 0 && (baseCount !== 0 || m.length !== 0)) return 'the table names base entries without a base block';
    base = { addr, count: baseCount, checksum: dv.getUint32(48, true), moved: m };
  }
  const counters = opts.counters ?? false;
  const t: DecodedTable = {
    version, count, flags: dv.getUint32(12, true), first: version >= 2 ? dv.getUint32(24, true) : 0,
    connFlags: new Uint32Array(count), rx: counters ? new Float64Array(count) : null, tx: counters ? new Float64Array(count) : null,
    oldFds: version === 1 ? new Uint32Array(count) : null, oldListenerFd: version === 1 ? getU64(dv, 24) : -1,
    bytes: new Map(), base,
  };
  const ew = entry / 4;
  const w = words(v, header, ew * count);
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
    const meta = version >= 2 ? w[e + 3]! : 0;
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

/** A base block's size for `count` connections. */
export const baseBlockSize = (count: number): number => BLOCK_HEADER + BLOCK_ENTRY * count;

/** Write a base block of `count` idle connections' counters into `v` (baseBlockSize bytes); its checksum. */
export function encodeBaseBlock(v: Uint8Array, rx: ArrayLike<number>, tx: ArrayLike<number>, count: number): number {
  if (!LITTLE) throw new Error('luo: the connections table is little-endian, and so must the host be');
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  dv.setUint32(0, BLOCK_MAGIC, true);
  dv.setUint32(4, 1, true);
  dv.setUint32(8, count, true);
  const w = new Uint32Array(v.buffer, v.byteOffset + BLOCK_HEADER, 4 * count);
  for (let j = 0, e = 0; j < count; j++, e += 4) {
    const r = rx[j]!;
    w[e] = r % 4294967296;
    w[e + 1] = Math.floor(r / 4294967296);
    const x = tx[j]!;
    w[e + 2] = x % 4294967296;
    w[e + 3] = Math.floor(x / 4294967296);
  }
  const sum = crc32Skipping(v.subarray(0, baseBlockSize(count)), 12);
  dv.setUint32(12, sum, true);
  return sum;
}

/** A base block as a reader keeps it: its checksum, and each connection's counters. */
export interface BaseBlock { count: number; checksum: number; rx: Float64Array; tx: Float64Array }

/** Decode a base block (`v` at least its size); the reason it is malformed, as a string, otherwise. */
export function decodeBaseBlock(v: Uint8Array): BaseBlock | string {
  if (v.length < BLOCK_HEADER) return 'no base block here';
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  if (dv.getUint32(0, true) !== BLOCK_MAGIC) return 'no base block here';
  if (dv.getUint32(4, true) !== 1) return `base block version ${dv.getUint32(4, true)} (this image reads 1)`;
  const count = dv.getUint32(8, true);
  if (baseBlockSize(count) > v.length) return `the base block claims ${count} entries in ${v.length} bytes`;
  const want = dv.getUint32(12, true);
  const got = crc32Skipping(v.subarray(0, baseBlockSize(count)), 12);
  if (got !== want) return `the base block's checksum is ${got.toString(16)}, ${want.toString(16)} was written: it was damaged`;
  const rx = new Float64Array(count);
  const tx = new Float64Array(count);
  const w = words(v, BLOCK_HEADER, 4 * count);
  for (let j = 0, e = 0; j < count; j++, e += 4) {
    rx[j] = w[e]! + w[e + 1]! * 4294967296;
    tx[j] = w[e + 2]! + w[e + 3]! * 4294967296;
  }
  return { count, checksum: want, rx, tx };
}

/**
 * For a list of indices skipped (ascending, each once: a v3 table's moved list), the index of
 * the r-th one not skipped, in O(log skipped): `gaps` is gapsOf(skipped).
 */
export function nthKept(gaps: Int32Array, r: number): number {
  // gaps[k] = skipped[k] - k, non-decreasing: the skipped indices before the answer are those
  // with gaps[k] <= r.
  let lo = 0;
  let hi = gaps.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (gaps[mid]! <= r) lo = mid + 1;
    else hi = mid;
  }
  return r + lo;
}

/** nthKept's index over `skipped` (ascending, each once). */
export function gapsOf(skipped: ArrayLike<number>): Int32Array {
  const g = new Int32Array(skipped.length);
  for (let k = 0; k < skipped.length; k++) g[k] = skipped[k]! - k;
  return g;
}
