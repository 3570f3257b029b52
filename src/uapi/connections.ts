/*
 * uapi/connections: the connections table, the payload a connection-carrying file handler
 * (server-v2, socket-v2) leaves in preserved memory for the next image. Pure: no I/O.
 *
 * v2, written by this luo (little-endian; the payload is the table's arena address):
 *   header 32 B   magic "LUOC" u32 · version u32 (2) · count u32 · flags u32 (bit 0: it was an
 *                 http.Server) · size u64 (the whole table) · first u32 (index, in the token's
 *                 fd list, of connection 0's fd: connection i is fd first + i) · checksum u32
 *                 (checksum32 of the table with this field 0)
 *   entry i 40 B  flags u32 (WRITE_ENDED 1, READ_ENDED 2) · unread u32 · unsent u32 · 0 u32 ·
 *                 data offset u64 · rx u64 · tx u64
 *   data          for each entry with bytes: its unread bytes, then its unsent bytes
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
export const TABLE_MAGIC = 0x434f554c; // "LUOC"
export const TABLE_HEADER = 32;
export const ENTRY_V1 = 24;
export const ENTRY_V2 = 40;
export const WRITE_ENDED = 1;
export const READ_ENDED = 2;
export const TABLE_HTTP = 1;
/** rx/tx when not known (the connection came from somewhere luo did not see). */
export const UNKNOWN = 2 ** 53 - 1;

const EMPTY = Buffer.alloc(0);

/** What a snapshot writes: parallel per-connection data, bytes only where there are some. */
export interface TableSource {
  count: number;
  flags: number;
  first: number;
  connFlags: ArrayLike<number>;
  rx: ArrayLike<number>;
  tx: ArrayLike<number>;
  /** Connection index → the bytes it carries. */
  bytes: ReadonlyMap<number, { unread: Uint8Array; unsent: Uint8Array }>;
}

export function tableSize(t: Pick<TableSource, 'count' | 'bytes'>): number {
  let data = 0;
  for (const b of t.bytes.values()) data += b.unread.length + b.unsent.length;
  return TABLE_HEADER + ENTRY_V2 * t.count + data;
}

/**
 * 32-bit checksum of `v` (FNV-1a over 32-bit words, the tail bytes folded in): cheap enough
 * for the pause (a table of 10 000 connections is ~400 KB), and any flipped byte changes it.
 */
export function checksum32(v: Uint8Array): number {
  const words = v.length >>> 2;
  let h = 0x811c9dc5;
  if (words) {
    const aligned = v.byteOffset % 4 === 0;
    const w = aligned ? new Uint32Array(v.buffer, v.byteOffset, words) : new Uint32Array(v.slice(0, words * 4).buffer);
    for (let i = 0; i < words; i++) h = Math.imul(h ^ w[i]!, 0x01000193);
  }
  for (let i = words * 4; i < v.length; i++) h = Math.imul(h ^ v[i]!, 0x01000193);
  return h >>> 0;
}

const setU64 = (dv: DataView, at: number, n: number): void => {
  dv.setUint32(at, n % 2 ** 32, true);
  dv.setUint32(at + 4, Math.floor(n / 2 ** 32), true);
};
const getU64 = (dv: DataView, at: number): number => dv.getUint32(at, true) + dv.getUint32(at + 4, true) * 2 ** 32;

/** Write a v2 table into `v` (tableSize bytes of fresh, zeroed preserved memory). */
export function encodeTable(v: Uint8Array, t: TableSource): void {
  const size = v.length;
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  dv.setUint32(0, TABLE_MAGIC, true);
  dv.setUint32(4, 2, true);
  dv.setUint32(8, t.count, true);
  dv.setUint32(12, t.flags, true);
  setU64(dv, 16, size);
  dv.setUint32(24, t.first, true);
  const { connFlags, rx, tx } = t;
  for (let i = 0; i < t.count; i++) {
    const e = TABLE_HEADER + ENTRY_V2 * i;
    if (connFlags[i]) dv.setUint32(e, connFlags[i]!, true);
    if (rx[i]) setU64(dv, e + 24, rx[i]!);
    if (tx[i]) setU64(dv, e + 32, tx[i]!);
  }
  let off = TABLE_HEADER + ENTRY_V2 * t.count;
  for (const [i, b] of t.bytes) {
    const e = TABLE_HEADER + ENTRY_V2 * i;
    dv.setUint32(e + 4, b.unread.length, true);
    dv.setUint32(e + 8, b.unsent.length, true);
    setU64(dv, e + 16, off);
    v.set(b.unread, off);
    v.set(b.unsent, off + b.unread.length);
    off += b.unread.length + b.unsent.length;
  }
  dv.setUint32(28, checksum32(v), true);
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
  rx: Float64Array;
  tx: Float64Array;
  /** v1 only: each connection's fd as the previous image numbered it, and the listener's. */
  oldFds: Uint32Array | null;
  oldListenerFd: number;
  bytes: Map<number, { unread: Buffer; unsent: Buffer }>;
}

/** Decode a table of `v.length` bytes; the reason it is malformed, as a string, otherwise. */
export function decodeTable(v: Uint8Array): DecodedTable | string {
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
    dv.setUint32(28, 0, true);
    const got = checksum32(v.subarray(0, total));
    dv.setUint32(28, want, true);
    if (got !== want) return `the table's checksum is ${got.toString(16)}, ${want.toString(16)} was written: it was damaged`;
  }
  const t: DecodedTable = {
    version, count, flags: dv.getUint32(12, true), first: version === 2 ? dv.getUint32(24, true) : 0,
    connFlags: new Uint32Array(count), rx: new Float64Array(count), tx: new Float64Array(count),
    oldFds: version === 1 ? new Uint32Array(count) : null, oldListenerFd: version === 1 ? getU64(dv, 24) : -1,
    bytes: new Map(),
  };
  for (let i = 0; i < count; i++) {
    const e = TABLE_HEADER + entry * i;
    let unread: number;
    let unsent: number;
    let off: number;
    if (version === 1) {
      t.oldFds![i] = dv.getUint32(e, true);
      t.connFlags[i] = dv.getUint32(e + 4, true);
      unread = dv.getUint32(e + 8, true);
      unsent = dv.getUint32(e + 12, true);
      off = unread || unsent ? getU64(dv, e + 16) : 0;
      t.rx[i] = UNKNOWN;
      t.tx[i] = UNKNOWN;
    } else {
      t.connFlags[i] = dv.getUint32(e, true);
      unread = dv.getUint32(e + 4, true);
      unsent = dv.getUint32(e + 8, true);
      off = unread || unsent ? getU64(dv, e + 16) : 0;
      t.rx[i] = getU64(dv, e + 24);
      t.tx[i] = getU64(dv, e + 32);
    }
    if (unread === 0 && unsent === 0) continue;
    if (off + unread + unsent > total) return `connection ${i} runs past the table's end`;
    t.bytes.set(i, {
      unread: unread ? Buffer.from(v.subarray(off, off + unread)) : EMPTY,
      unsent: unsent ? Buffer.from(v.subarray(off + unread, off + unread + unsent)) : EMPTY,
    });
  }
  return t;
}
