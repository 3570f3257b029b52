/*
 * state/map: PreservedMap, a Map-like store whose every byte lives in preserved memory
 * (layout: uapi/state.ts), so that the next version opens it where it is: no copy, no parse,
 * no rehash, in time that depends on neither its entries nor its bytes.
 *
 * Lifecycle:
 *   create(mem, version)   a cold start: a header, a 64 Ki-slot index and a 1 MiB segment.
 *   open(mem, addr, size)  the next version: claims the header, checks magic, layout, CRC
 *                          and every field against what was handed over (EBADMSG naming the
 *                          field otherwise: nothing is claimed then, the service goes on and
 *                          may start the map afresh), then claims the index and the segments.
 *   get/set/has/delete/clear/iteration while the service runs. Writes grow the store: a new
 *     segment (twice the last, up to 1 GiB) when the last is full, a new index (twice the
 *     slots) past 3/4 full, written from the hashes kept in the index (no key is hashed again).
 *     Deleted and outgrown entries go to free lists by size class and are reused.
 *   freeze()  (FROZEN) writes refused from here (EBUSY: this process is handing over), the
 *             header's CRC written. thaw() (CANCEL, or this version resumes) allows them again.
 *   A write is synchronous, so an update (which only happens between two turns of the event
 *   loop) never sees half of one.
 * Values: strings, numbers, Uint8Arrays (get returns a copy), undefined, and anything else
 * JSON.stringify takes (read back with JSON.parse: a Date comes back as its string).
 * Keys: strings or Uint8Arrays (distinct: "a" and bytes [0x61] are two keys).
 */
import { fail } from '../errors.js';
import {
  ENTRY_HEAD, FREE_CLASSES, FREE_HEADS, KEY_BYTES, KEY_LEN_MASK, KEY_ONE_BYTE, KEY_TWO_BYTE, MAP_HEADER, MAP_LAYOUT, MAP_MAGIC, MAX_SEGMENTS,
  OFF_MASK, SEG_SHIFT, SEG_TABLE, SEGMENT_MAX, TOMBSTONE, VAL_ASCII, VAL_BYTES, VAL_JSON, VAL_NUMBER, VAL_STRING, VAL_UNDEFINED, capFor, classOf,
} from '../uapi/state.js';
import { crc32Skipping } from '../uapi/crc.js';

/** Preserved memory as the state layer uses it (luo's arena; luo.ts adapts its Kho). */
export interface StateMemory {
  /** Allocate and preserve `size` bytes; their address. */
  alloc(size: number): number;
  view(addr: number, len: number): Uint8Array;
  free(addr: number, size: number): void;
  /** Next version: claim a handed-over block (and carry it through the next update); its size. */
  claim(addr: number): number;
  /** Next version: claim a handed-over block and free it at once. */
  claimFree(addr: number): void;
}

export type Key = string | Uint8Array;
export type Value = unknown;

export interface MapStats {
  entries: number;
  /** Bytes in live entries (their blocks, headers included). */
  bytesUsed: number;
  /** Bytes of free blocks waiting for reuse. */
  bytesFree: number;
  /** Segments' bytes handed out so far, and their total size. */
  bytesAllocated: number;
  bytesReserved: number;
  indexSlots: number;
  segments: number;
}

const FIRST_SEGMENT = 1 << 20;
const FIRST_SLOTS = 1 << 16;
const MAX_KEY = KEY_LEN_MASK;

interface Segment { addr: number; size: number; u8: Uint8Array; u32: Uint32Array; f64: Float64Array; buf: Buffer }

function segmentOf(addr: number, size: number, u8: Uint8Array): Segment {
  return { addr, size, u8, u32: new Uint32Array(u8.buffer, u8.byteOffset, size >>> 2), f64: new Float64Array(u8.buffer, u8.byteOffset, Math.floor(size / 8)), buf: Buffer.from(u8.buffer, u8.byteOffset, size) };
}

/**
 * FNV-1a over the char codes (or bytes), from the map's own seed, then murmur3's finalizer.
 * The seed is per map (random, kept in its header): with one hash function for every map,
 * filling a map from another's iteration (which follows the hashes) inserts keys in hash
 * order, and linear probing clusters them into quadratic time (4.7 million entries loaded
 * from a JSON dump took over 200 s; 7.3 s with a seed).
 */
function hashString(s: string, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return fmix(h);
}
function hashBytes(b: Uint8Array, seed: number): number {
  let h = 0x050c5d1f ^ seed;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
  return fmix(h);
}
function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const align8 = (n: number): number => (n + 7) & ~7;

export class PreservedMap implements Iterable<[Key, Value]> {
  readonly name: string;
  readonly #mem: StateMemory;
  readonly #hdrAddr: number;
  readonly #h32: Uint32Array;
  readonly #h64: Float64Array;
  readonly #hdr: Uint8Array;
  #segs: Segment[] = [];
  #index!: Uint32Array;
  #indexAddr = 0;
  #mask = 0;
  #count = 0;
  #tomb = 0;
  #live = 0;
  #frozen = false;
  #closed = false;
  #generation = 0;
  #seed = 0;
  /** Decoded strings and numbers by string key (options.cache), or null. */
  #cache: Map<string, Value> | null = null;
  #cacheMax = 0;

  private constructor(name: string, mem: StateMemory, hdrAddr: number) {
    this.name = name;
    this.#mem = mem;
    this.#hdrAddr = hdrAddr;
    this.#hdr = mem.view(hdrAddr, MAP_HEADER);
    this.#h32 = new Uint32Array(this.#hdr.buffer, this.#hdr.byteOffset, MAP_HEADER / 4);
    this.#h64 = new Float64Array(this.#hdr.buffer, this.#hdr.byteOffset, MAP_HEADER / 8);
  }

  /** A new, empty map (a cold start, or a name the previous version did not have). */
  static create(name: string, mem: StateMemory, version: number): PreservedMap {
    const addr = mem.alloc(MAP_HEADER);
    const m = new PreservedMap(name, mem, addr);
    m.#hdr.fill(0);
    m.#h32[0] = MAP_MAGIC;
    m.#h32[1] = MAP_LAYOUT;
    m.#h32[3] = version;
    m.#seed = m.#h32[12] = (Math.random() * 0x100000000) >>> 0;
    m.#newIndex(FIRST_SLOTS);
    m.#addSegment(FIRST_SEGMENT);
    return m;
  }

  /** The map a previous version handed over (see the header). */
  static open(name: string, mem: StateMemory, addr: number, size: number): PreservedMap {
    const bad = (what: string): never => {
      throw fail('EBADMSG', `map "${name}": ${what}; it was not opened (luo.map(name, { onDamaged: 'fresh' }) starts it empty)`);
    };
    if (size !== MAP_HEADER) bad(`its header is ${size} bytes, not ${MAP_HEADER}`);
    const got = mem.claim(addr);
    if (got !== MAP_HEADER) bad(`the memory handed over at its header is ${got} bytes, not ${MAP_HEADER}`);
    const m = new PreservedMap(name, mem, addr);
    const h = m.#h32;
    if (h[0] !== MAP_MAGIC) bad(`bad magic 0x${h[0]!.toString(16)} (expected "LUOM")`);
    if (h[1] !== MAP_LAYOUT) bad(`layout ${h[1]} (this luo reads layout ${MAP_LAYOUT})`);
    if (h[2] !== headerCrc(m.#hdr)) bad(`its header's checksum does not match (0x${h[2]!.toString(16)}, computed 0x${headerCrc(m.#hdr).toString(16)}): the header was damaged`);
    const slots = h[6]!;
    const nseg = h[7]!;
    if (slots < 16 || (slots & (slots - 1)) !== 0) bad(`index capacity ${slots} is not a power of two`);
    if (nseg < 1 || nseg > MAX_SEGMENTS) bad(`${nseg} segments`);
    if (h[4]! + h[5]! > slots) bad(`${h[4]} entries and ${h[5]} tombstones in ${slots} slots`);
    // Every region is checked before any is claimed: a damaged header claims nothing but itself.
    const segs: Array<[number, number, number]> = [];
    for (let i = 0; i < nseg; i++) {
      const o = (SEG_TABLE >> 3) + i * 3;
      const [a, s, u] = [m.#h64[o]!, m.#h64[o + 1]!, m.#h64[o + 2]!];
      if (!Number.isSafeInteger(a) || a <= 0 || !Number.isSafeInteger(s) || s <= 0 || s > SEGMENT_MAX || s % 4096 !== 0 || !(u >= 16 && u <= s)) bad(`segment ${i} is { address ${a}, size ${s}, used ${u} }`);
      segs.push([a, s, u]);
    }
    const indexAddr = m.#h64[4]!;
    if (!Number.isSafeInteger(indexAddr) || indexAddr <= 0) bad(`index address ${indexAddr}`);
    const claimSized = (a: number, s: number, what: string): void => {
      const n = mem.claim(a);
      if (n !== s) bad(`${what} was handed over as ${n} bytes, the header says ${s}`);
    };
    claimSized(indexAddr, slots * 8, 'its index');
    m.#indexAddr = indexAddr;
    m.#index = u32View(mem, indexAddr, slots * 8);
    m.#mask = slots - 1;
    for (const [i, [a, s]] of segs.entries()) {
      claimSized(a, s, `segment ${i}`);
      m.#segs.push(segmentOf(a, s, mem.view(a, s)));
    }
    m.#count = h[4]!;
    m.#tomb = h[5]!;
    m.#seed = h[12]!;
    m.#live = m.#h64[5]!;
    return m;
  }

  /**
   * Keep the strings and numbers it reads and writes, by string key, on the JS heap as well:
   * gets at a JS Map's speed (and memory) instead of decoding from preserved memory each time.
   * `max` entries at most (the oldest go first); 0 turns it off. The next version starts with
   * an empty cache, filled as it reads.
   */
  setCache(max: number): void {
    if (!(max >= 0)) throw fail('EINVAL', `map "${this.name}": cache of ${max} entries`);
    this.#cacheMax = max;
    this.#cache = max > 0 ? (this.#cache ?? new Map()) : null;
    while (this.#cache && this.#cache.size > max) this.#cache.delete(this.#cache.keys().next().value!);
  }

  #remember(key: string, v: Value): void {
    const c = this.#cache!;
    if (c.size >= this.#cacheMax && !c.has(key)) c.delete(c.keys().next().value!);
    c.set(key, v);
  }

  /** The address of its header (the directory records it). */
  get address(): number {
    return this.#hdrAddr;
  }

  /** The version of the data's format, the application's (migrations move it). */
  get version(): number {
    return this.#h32[3]!;
  }
  set version(v: number) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw fail('EINVAL', `map "${this.name}": version ${v}`);
    this.#writable();
    this.#h32[3] = v;
  }

  get size(): number {
    return this.#count;
  }

  // ---------------------------------------------------------------------------- lookups

  #hash(key: Key): number {
    return hashOf(key, this.#seed);
  }

  /** The slot holding `key`, or -1. */
  #find(key: Key, h: number): number {
    if (this.#closed) throw fail('EBADF', `map "${this.name}" was forgotten (luo.forget), its memory released`);
    const idx = this.#index;
    const mask = this.#mask;
    let i = h & mask;
    for (;;) {
      const r = idx[2 * i + 1]!;
      if (r === 0) return -1;
      if (r !== TOMBSTONE && idx[2 * i] === h && this.#keyIs(r, key)) return i;
      i = (i + 1) & mask;
    }
  }

  #keyIs(r: number, key: Key): boolean {
    const seg = this.#segs[r >>> SEG_SHIFT]!;
    const off = (r & OFF_MASK) << 4;
    const kw = seg.u32[(off >>> 2) + 1]!;
    const kind = kw >>> 30;
    const len = kw & KEY_LEN_MASK;
    const u8 = seg.u8;
    const k0 = off + ENTRY_HEAD;
    if (typeof key === 'string') {
      if (kind === KEY_ONE_BYTE) {
        if (len !== key.length) return false;
        for (let i = 0; i < len; i++) if (u8[k0 + i] !== key.charCodeAt(i)) return false;
        return true;
      }
      if (kind !== KEY_TWO_BYTE || len !== key.length * 2) return false;
      for (let i = 0; i < key.length; i++) if ((u8[k0 + 2 * i]! | (u8[k0 + 2 * i + 1]! << 8)) !== key.charCodeAt(i)) return false;
      return true;
    }
    if (kind !== KEY_BYTES || len !== key.length) return false;
    for (let i = 0; i < len; i++) if (u8[k0 + i] !== key[i]) return false;
    return true;
  }

  has(key: Key): boolean {
    return this.#find(key, this.#hash(key)) >= 0;
  }

  get(key: Key): Value {
    const c = this.#cache;
    if (c !== null && typeof key === 'string') {
      const v = c.get(key);
      if (v !== undefined) return v;
    }
    const i = this.#find(key, this.#hash(key));
    if (i < 0) return undefined;
    const v = this.#value(this.#index[2 * i + 1]!);
    if (c !== null && typeof key === 'string' && (typeof v === 'string' || typeof v === 'number')) this.#remember(key, v);
    return v;
  }

  #value(r: number): Value {
    const seg = this.#segs[r >>> SEG_SHIFT]!;
    const off = (r & OFF_MASK) << 4;
    const w = off >>> 2;
    const klen = seg.u32[w + 1]! & KEY_LEN_MASK;
    const vlen = seg.u32[w + 2]!;
    const type = seg.u8[off + 12]!;
    const v0 = off + ENTRY_HEAD + align8(klen);
    switch (type) {
      case VAL_ASCII:
        return seg.buf.toString('latin1', v0, v0 + vlen);
      case VAL_STRING:
        return seg.buf.toString('utf8', v0, v0 + vlen);
      case VAL_NUMBER:
        return seg.f64[v0 >>> 3];
      case VAL_BYTES:
        return seg.u8.slice(v0, v0 + vlen);
      case VAL_JSON:
        return JSON.parse(seg.buf.toString('utf8', v0, v0 + vlen));
      case VAL_UNDEFINED:
        return undefined;
      default:
        throw fail('EBADMSG', `map "${this.name}": an entry has value type ${type}`);
    }
  }

  #key(r: number): Key {
    const seg = this.#segs[r >>> SEG_SHIFT]!;
    const off = (r & OFF_MASK) << 4;
    const kw = seg.u32[(off >>> 2) + 1]!;
    const len = kw & KEY_LEN_MASK;
    const k0 = off + ENTRY_HEAD;
    switch (kw >>> 30) {
      case KEY_ONE_BYTE:
        return seg.buf.toString('latin1', k0, k0 + len);
      case KEY_TWO_BYTE:
        return seg.buf.toString('utf16le', k0, k0 + len);
      default:
        return seg.u8.slice(k0, k0 + len);
    }
  }

  // ---------------------------------------------------------------------------- writes

  #writable(): void {
    if (this.#frozen) throw fail('EBUSY', `map "${this.name}" is frozen: this version is handing over to the next one (writes are refused from FROZEN until the update is cancelled or rolled back)`);
    if (this.#closed) throw fail('EBADF', `map "${this.name}" was forgotten (luo.forget), its memory released`);
  }

  set(key: Key, value: Value): this {
    this.#store(key, value);
    // Only once it is stored (a write refused leaves the cache as the map).
    const c = this.#cache;
    if (c !== null && typeof key === 'string') {
      if (typeof value === 'string' || typeof value === 'number') this.#remember(key, value);
      else c.delete(key);
    }
    return this;
  }

  #store(key: Key, value: Value): void {
    this.#writable();
    // The value, encoded: its type and its bytes (strings are written straight into the block).
    let type: number;
    let vlen: number;
    let text: string | null = null;
    let bytes: Uint8Array | null = null;
    if (typeof value === 'string') {
      text = value;
      vlen = Buffer.byteLength(value, 'utf8');
      type = vlen === value.length ? VAL_ASCII : VAL_STRING;
    } else if (typeof value === 'number') {
      type = VAL_NUMBER;
      vlen = 8;
    } else if (value instanceof Uint8Array) {
      type = VAL_BYTES;
      bytes = value;
      vlen = value.length;
    } else if (value === undefined) {
      type = VAL_UNDEFINED;
      vlen = 0;
    } else {
      let json: string | undefined;
      try {
        json = JSON.stringify(value);
      } catch (e) {
        throw fail('EINVAL', `map "${this.name}": the value cannot be stored: ${(e as Error).message}`);
      }
      if (json === undefined) throw fail('EINVAL', `map "${this.name}": a ${typeof value} cannot be stored (strings, numbers, bytes, and what JSON.stringify takes)`);
      text = json;
      type = VAL_JSON;
      vlen = Buffer.byteLength(json, 'utf8');
    }
    const h = this.#hash(key);
    const klen = keyBytes(key);

    const need = ENTRY_HEAD + align8(klen) + vlen;
    if (need > SEGMENT_MAX / 2) throw fail('E2BIG', `map "${this.name}": an entry of ${need} bytes (at most ${SEGMENT_MAX / 2})`);
    let i = this.#find(key, h);
    if (i >= 0) {
      const r = this.#index[2 * i + 1]!;
      const seg = this.#segs[r >>> SEG_SHIFT]!;
      const off = (r & OFF_MASK) << 4;
      if (need <= seg.u32[off >>> 2]!) {
        this.#writeValue(seg, off, klen, type, vlen, value, text, bytes);
        return;
      }
      const nr = this.#alloc(need);
      this.#writeEntry(nr, key, klen, type, vlen, value, text, bytes);
      this.#index[2 * i + 1] = nr; // the switch: one store
      this.#free(r);
      return;
    }
    if ((this.#count + this.#tomb + 1) * 4 > (this.#mask + 1) * 3) this.#rebuild(this.#count * 2 >= this.#mask + 1 ? (this.#mask + 1) * 2 : this.#mask + 1);
    const nr = this.#alloc(need);
    this.#writeEntry(nr, key, klen, type, vlen, value, text, bytes);
    // The first empty or deleted slot of the key's run.
    const idx = this.#index;
    i = h & this.#mask;
    while (idx[2 * i + 1] !== 0 && idx[2 * i + 1] !== TOMBSTONE) i = (i + 1) & this.#mask;
    if (idx[2 * i + 1] === TOMBSTONE) this.#setTomb(this.#tomb - 1);
    idx[2 * i] = h;
    idx[2 * i + 1] = nr;
    this.#setCount(this.#count + 1);
    return;
  }

  delete(key: Key): boolean {
    this.#writable();
    const i = this.#find(key, this.#hash(key));
    if (i < 0) return false;
    if (typeof key === 'string') this.#cache?.delete(key);
    const r = this.#index[2 * i + 1]!;
    this.#index[2 * i + 1] = TOMBSTONE;
    this.#free(r);
    this.#setCount(this.#count - 1);
    this.#setTomb(this.#tomb + 1);
    return true;
  }

  /** Every entry gone; the memory back to one segment and a small index. */
  clear(): void {
    this.#writable();
    this.#cache?.clear();
    for (const s of this.#segs.slice(1)) this.#mem.free(s.addr, s.size);
    this.#segs.length = 1;
    this.#h32[7] = 1;
    this.#h64[(SEG_TABLE >> 3) + 2] = 16;
    this.#mem.free(this.#indexAddr, (this.#mask + 1) * 8);
    this.#newIndex(FIRST_SLOTS);
    this.#generation++;
    this.#h32.fill(0, FREE_HEADS >> 2, (FREE_HEADS >> 2) + FREE_CLASSES);
    this.#setCount(0);
    this.#setTomb(0);
    this.#setLive(0);
  }

  #writeEntry(r: number, key: Key, klen: number, type: number, vlen: number, value: Value, text: string | null, bytes: Uint8Array | null): void {
    const seg = this.#segs[r >>> SEG_SHIFT]!;
    const off = (r & OFF_MASK) << 4;
    const k0 = off + ENTRY_HEAD;
    let kind: number;
    if (typeof key === 'string') {
      if (klen === key.length) {
        kind = KEY_ONE_BYTE;
        seg.buf.write(key, k0, klen, 'latin1');
      } else {
        kind = KEY_TWO_BYTE;
        seg.buf.write(key, k0, klen, 'utf16le');
      }
    } else {
      kind = KEY_BYTES;
      seg.u8.set(key, k0);
    }
    seg.u32[(off >>> 2) + 1] = (kind << 30) | klen;
    this.#writeValue(seg, off, klen, type, vlen, value, text, bytes);
  }

  #writeValue(seg: Segment, off: number, klen: number, type: number, vlen: number, value: Value, text: string | null, bytes: Uint8Array | null): void {
    const v0 = off + ENTRY_HEAD + align8(klen);
    if (text !== null) {
      seg.buf.write(text, v0, vlen, type === VAL_ASCII ? 'latin1' : 'utf8');
    } else if (type === VAL_NUMBER) seg.f64[v0 >>> 3] = value as number;
    else if (bytes) seg.u8.set(bytes, v0);
    seg.u32[(off >>> 2) + 2] = vlen;
    seg.u8[off + 12] = type;
  }

  // ---------------------------------------------------------------------------- memory

  #alloc(need: number): number {
    const cap = capFor(need);
    const c = classOf(cap);
    const hw = (FREE_HEADS >> 2) + c;
    const head = this.#h32[hw]!;
    if (head !== 0) {
      const seg = this.#segs[head >>> SEG_SHIFT]!;
      this.#h32[hw] = seg.u32[(((head & OFF_MASK) << 4) >>> 2) + 1]!;
      this.#setLive(this.#live + cap);
      return head;
    }
    let si = this.#segs.length - 1;
    let uo = (SEG_TABLE >> 3) + si * 3 + 2;
    let used = this.#h64[uo]!;
    if (used + cap > this.#segs[si]!.size) {
      const last = this.#segs[si]!.size;
      let size = Math.min(SEGMENT_MAX, last * 2);
      while (size < cap + 16) size *= 2;
      this.#addSegment(size);
      si++;
      uo += 3;
      used = 16;
    }
    const seg = this.#segs[si]!;
    this.#h64[uo] = used + cap;
    seg.u32[used >>> 2] = cap;
    this.#setLive(this.#live + cap);
    return ((si << SEG_SHIFT) | (used >>> 4)) >>> 0;
  }

  #free(r: number): void {
    const seg = this.#segs[r >>> SEG_SHIFT]!;
    const w = ((r & OFF_MASK) << 4) >>> 2;
    const cap = seg.u32[w]!;
    const hw = (FREE_HEADS >> 2) + classOf(cap);
    seg.u32[w + 1] = this.#h32[hw]!;
    this.#h32[hw] = r;
    this.#setLive(this.#live - cap);
  }

  #addSegment(size: number): void {
    const n = this.#segs.length;
    if (n >= MAX_SEGMENTS) throw fail('ENOSPC', `map "${this.name}": ${MAX_SEGMENTS} segments in use`);
    const addr = this.#mem.alloc(size);
    this.#segs.push(segmentOf(addr, size, this.#mem.view(addr, size)));
    const o = (SEG_TABLE >> 3) + n * 3;
    this.#h64[o] = addr;
    this.#h64[o + 1] = size;
    this.#h64[o + 2] = 16; // offset 0 is never an entry: reference 0 means empty
    this.#h32[7] = n + 1;
  }

  #newIndex(slots: number): void {
    const addr = this.#mem.alloc(slots * 8);
    this.#indexAddr = addr;
    this.#index = u32View(this.#mem, addr, slots * 8);
    this.#index.fill(0);
    this.#mask = slots - 1;
    this.#h64[4] = addr;
    this.#h32[6] = slots;
  }

  /** A new index of `slots` (bigger, or the same size to sweep tombstones), from the stored
   *  hashes: no key is read. */
  #rebuild(slots: number): void {
    this.#generation++;
    const old = this.#index;
    const oldAddr = this.#indexAddr;
    const oldSlots = this.#mask + 1;
    this.#newIndex(slots);
    const idx = this.#index;
    const mask = this.#mask;
    for (let j = 0; j < oldSlots; j++) {
      const r = old[2 * j + 1]!;
      if (r === 0 || r === TOMBSTONE) continue;
      const h = old[2 * j]!;
      let i = h & mask;
      while (idx[2 * i + 1] !== 0) i = (i + 1) & mask;
      idx[2 * i] = h;
      idx[2 * i + 1] = r;
    }
    this.#setTomb(0);
    this.#mem.free(oldAddr, oldSlots * 8);
  }

  /**
   * PREPARE: no memory can be preserved until the update ends, so make room now for a quarter
   * more entries (at least 1 024) in the index and a quarter more bytes (at least 1 MiB) in
   * the last segment.
   */
  reserve(): void {
    this.#writable();
    const extra = Math.max(1024, this.#count >> 2);
    let slots = this.#mask + 1;
    if ((this.#count + this.#tomb + extra) * 4 > slots * 3) {
      while ((this.#count + extra) * 4 > slots * 3) slots *= 2;
      this.#rebuild(slots);
    }
    const last = this.#segs.length - 1;
    const free = this.#segs[last]!.size - this.#h64[(SEG_TABLE >> 3) + last * 3 + 2]!;
    const want = Math.min(SEGMENT_MAX / 2, Math.max(1 << 20, Math.floor(this.#live / 4)));
    if (free < want) {
      let size = Math.min(SEGMENT_MAX, this.#segs[last]!.size * 2);
      while (size < want + 16) size *= 2;
      this.#addSegment(size);
    }
  }

  #setCount(n: number): void {
    this.#count = n;
    this.#h32[4] = n;
  }
  #setTomb(n: number): void {
    this.#tomb = n;
    this.#h32[5] = n;
  }
  #setLive(n: number): void {
    this.#live = n;
    this.#h64[5] = n;
  }

  // ---------------------------------------------------------------------------- iteration

  *entries(): IterableIterator<[Key, Value]> {
    for (const r of this.#refs()) yield [this.#key(r), this.#value(r)];
  }
  *keys(): IterableIterator<Key> {
    for (const r of this.#refs()) yield this.#key(r);
  }
  *values(): IterableIterator<Value> {
    for (const r of this.#refs()) yield this.#value(r);
  }
  [Symbol.iterator](): IterableIterator<[Key, Value]> {
    return this.entries();
  }
  forEach(fn: (value: Value, key: Key, map: this) => void): void {
    for (const [k, v] of this.entries()) fn(v, k, this);
  }
  /** The live references, from a snapshot of the index (a write during iteration is safe; it
   *  may or may not be seen). */
  *#refs(): IterableIterator<number> {
    const idx = this.#index.slice();
    for (let j = 1; j < idx.length; j += 2) {
      const r = idx[j]!;
      if (r !== 0 && r !== TOMBSTONE) yield r;
    }
  }

  // ---------------------------------------------------------------------------- slots
  // For a scan that runs in slices while the map is written (a background checksum): the
  // index's slots in order, where a key sits, and a generation that changes whenever the
  // index is rebuilt (every key moves then: the scan starts again).

  get slots(): number {
    return this.#mask + 1;
  }
  get generation(): number {
    return this.#generation;
  }
  /** The slot holding `key`, or -1. */
  slotOf(key: Key): number {
    return this.#find(key, this.#hash(key));
  }
  /** fn(key, value) for every live slot in [from, to). */
  scanSlots(from: number, to: number, fn: (key: Key, value: Value) => void): void {
    const idx = this.#index;
    for (let i = from; i < Math.min(to, this.#mask + 1); i++) {
      const r = idx[2 * i + 1]!;
      if (r !== 0 && r !== TOMBSTONE) fn(this.#key(r), this.#value(r));
    }
  }

  stats(): MapStats {
    let allocated = 0;
    let reserved = 0;
    for (let i = 0; i < this.#segs.length; i++) {
      allocated += this.#h64[(SEG_TABLE >> 3) + i * 3 + 2]! - 16;
      reserved += this.#segs[i]!.size;
    }
    return { entries: this.#count, bytesUsed: this.#live, bytesFree: allocated - this.#live, bytesAllocated: allocated, bytesReserved: reserved, indexSlots: this.#mask + 1, segments: this.#segs.length };
  }

  /** The longest distance of an entry from its home slot: linear probing's worst case. A scan
   *  of the whole index (stats() stays O(segments): services print it on their hot paths). */
  maxProbe(): number {
    let worst = 0;
    const idx = this.#index;
    const mask = this.#mask;
    for (let i = 0; i <= mask; i++) {
      const r = idx[2 * i + 1]!;
      if (r !== 0 && r !== TOMBSTONE) worst = Math.max(worst, (i - (idx[2 * i]! & mask) + mask + 1) & mask);
    }
    return worst;
  }

  // ---------------------------------------------------------------------------- the update

  /** FROZEN: no more writes; the header's checksum. */
  freeze(): void {
    this.#frozen = true;
    this.#h32[2] = headerCrc(this.#hdr);
  }
  /** The update did not happen (CANCEL) or rolled back: writable again. */
  thaw(): void {
    this.#frozen = false;
  }
  get frozen(): boolean {
    return this.#frozen;
  }

  /** Give every block back (the map is dropped: luo.map's onDamaged, or a test). */
  destroy(): void {
    for (const s of this.#segs) this.#mem.free(s.addr, s.size);
    this.#mem.free(this.#indexAddr, (this.#mask + 1) * 8);
    this.#mem.free(this.#hdrAddr, MAP_HEADER);
    this.#segs = [];
    this.#closed = true;
  }

  get [Symbol.toStringTag](): string {
    return 'PreservedMap';
  }
}

function u32View(mem: StateMemory, addr: number, len: number): Uint32Array {
  const v = mem.view(addr, len);
  return new Uint32Array(v.buffer, v.byteOffset, len >>> 2);
}

const hashOf = (key: Key, seed: number): number => {
  if (typeof key === 'string') return hashString(key, seed);
  if (key instanceof Uint8Array) return hashBytes(key, seed);
  throw fail('EINVAL', `a key is a string or a Uint8Array, not ${key === null ? 'null' : typeof key}`);
};

/** A key's stored length: one byte per char when every char fits, else two. */
function keyBytes(key: Key): number {
  let n: number;
  if (typeof key === 'string') {
    n = key.length;
    for (let i = 0; i < key.length; i++) {
      if (key.charCodeAt(i) > 0xff) {
        n = key.length * 2;
        break;
      }
    }
  } else n = key.length;
  if (n > MAX_KEY) throw fail('E2BIG', `a key of ${n} bytes`);
  return n;
}

/** CRC-32 of a header with its checksum field (bytes 8-11) counted as zero. */
const headerCrc = (h: Uint8Array): number => crc32Skipping(h, 8);
