/*
 * examples/kv/store: a key-value store whose every byte lives in memory handed to it
 * (preserved arena memory under luo, plain buffers for the comparison contenders), so a live
 * update hands it over without copying or serializing anything.
 *
 * Lifecycle:
 *   create(capacity, mem)     cold start: a root block and record segments, all zero
 *   open(root, mem)           after an update: read the root, map the same segments (O(segments))
 *   put/get/delete            in place; every write keeps the running checksum in the root
 *   verify()                  recompute the checksum from every record, in slices, while the
 *                             service keeps writing (writes to slots not yet scanned are
 *                             accounted for), and compare with the root's: proves the memory
 *                             arrived intact. Never blocks the loop for more than one slice
 *                             (about a millisecond); waits while its gate is closed.
 * Unhappy paths: a key over 32 bytes or a value over 88 is refused (RangeError); a store 90%
 * full refuses inserts (StoreFullError); a root with the wrong magic or an unknown format is
 * refused at open (Error naming what was found).
 *
 * Format 1 (root block, 4 KiB, little-endian):
 *   0 magic "LUKV"   4 format   8 capacity (records)   12 records per segment
 *   16 segments      20 live count   24 tombstones   28 sum lane A   32 sum lane B
 *   36 updates survived   40 u64 revisions block (format 2; 0 in format 1)   48 u64 segment
 *   addresses, one per segment
 * Records, 128 bytes each, open addressing (linear probing) over the concatenated segments
 * (the capacity is a whole number of segments):
 *   0 u8 state (0 empty, 1 live, 2 deleted)   1 u8 key length   2 u16 value length
 *   4 u32 key hash   8 key (32 bytes)   40 value (88 bytes)
 * Format 2 adds a revision counter per record, in a separate block (a root listing one u32
 * array per record segment), so format-1 code can still open a format-2 store: it releases
 * that block and writes format 1 back (the way back after an update to v2).
 */

export const RECORD = 128;
export const MAX_KEY = 32;
export const MAX_VALUE = 88;
const ROOT = 4096;
const MAGIC = 0x564b554c; // "LUKV"
const SEG_LOG2 = 17; // 2^17 records × 128 B = 16 MiB per segment
const MAX_SEGS = (ROOT - 48) / 8;

/** Where the store's memory comes from: preserved arena memory, or plain buffers. */
export interface StoreMemory {
  alloc(size: number): number;
  view(addr: number, len: number): Uint8Array;
  /** After an update: claim a block the previous image handed over; returns its size. */
  claim?(addr: number): number;
  /** After an update: give back a handed-over block this code has no use for. */
  release?(addr: number): void;
  free?(addr: number, size: number): void;
}

export class StoreFullError extends Error {
  readonly code = 'ENOSPC';
}

/** FNV-1a over `b`, from `h`. */
function fnv(h: number, b: Uint8Array, off: number, len: number): number {
  for (let i = off; i < off + len; i++) h = Math.imul(h ^ b[i]!, 16777619);
  return h >>> 0;
}

export class KvStore {
  readonly root: Uint8Array;
  readonly rootAddr: number;
  readonly capacity: number;
  #dv: DataView;
  #segs: Uint8Array[];
  #segDv: DataView[];
  #revs: Uint32Array[] | null = null;
  #perSeg: number;
  #scan: { cursor: number; adjA: number; adjB: number } | null = null;

  private constructor(rootAddr: number, root: Uint8Array, segs: Uint8Array[]) {
    this.rootAddr = rootAddr;
    this.root = root;
    this.#dv = new DataView(root.buffer, root.byteOffset, root.byteLength);
    this.capacity = this.#dv.getUint32(8, true);
    this.#perSeg = this.#dv.getUint32(12, true);
    this.#segs = segs;
    this.#segDv = segs.map((s) => new DataView(s.buffer, s.byteOffset, s.byteLength));
  }

  /** Bytes of memory a store of `capacity` records uses (format 1). */
  static bytesFor(capacity: number): number {
    return ROOT + capacity * RECORD;
  }

  /** The largest capacity (a whole number of segments) whose records fit in `bytes`. */
  static capacityFor(bytes: number): number {
    const n = Math.max(16, Math.floor((bytes - ROOT) / RECORD));
    return n < 2 ** SEG_LOG2 ? n : n - (n % 2 ** SEG_LOG2);
  }

  static create(capacity: number, mem: StoreMemory, format: 1 | 2 = 1): KvStore {
    const perSeg = Math.min(capacity, 2 ** SEG_LOG2);
    if (!Number.isInteger(capacity) || capacity < 16 || capacity % perSeg !== 0) throw new RangeError(`capacity must be at least 16 and a whole number of ${2 ** SEG_LOG2}-record segments, not ${capacity}`);
    const nSegs = capacity / perSeg;
    if (nSegs > MAX_SEGS) throw new RangeError(`capacity ${capacity} needs ${nSegs} segments, more than ${MAX_SEGS}`);
    // Memory from StoreMemory.alloc reads as zeros (luo's arena pages are fresh or were
    // hole-punched when freed): nothing needs clearing, nothing is touched until used.
    const rootAddr = mem.alloc(ROOT);
    const root = mem.view(rootAddr, ROOT);
    const dv = new DataView(root.buffer, root.byteOffset, ROOT);
    dv.setUint32(0, MAGIC, true);
    dv.setUint32(4, 1, true);
    dv.setUint32(8, capacity, true);
    dv.setUint32(12, perSeg, true);
    dv.setUint32(16, nSegs, true);
    // One block for all the segments (they are listed one by one, so a store may also be
    // made of separate blocks).
    const base = mem.alloc(nSegs * perSeg * RECORD);
    const addrs = Array.from({ length: nSegs }, (_, i) => base + i * perSeg * RECORD);
    addrs.forEach((a, i) => dv.setBigUint64(48 + 8 * i, BigInt(a), true));
    const s = new KvStore(rootAddr, root, mapRuns(mem, addrs, perSeg * RECORD, false));
    if (format === 2) s.upgrade(mem);
    return s;
  }

  /**
   * Open a store whose root is at `rootAddr` (claiming its blocks when `mem.claim` exists).
   * `understands` is the newest format this code knows; a newer store is refused.
   */
  static open(rootAddr: number, mem: StoreMemory, understands: 1 | 2): KvStore {
    mem.claim?.(rootAddr);
    const root = mem.view(rootAddr, ROOT);
    const dv = new DataView(root.buffer, root.byteOffset, ROOT);
    if (dv.getUint32(0, true) !== MAGIC) throw new Error(`no key-value store at ${rootAddr} (magic 0x${dv.getUint32(0, true).toString(16)})`);
    const format = dv.getUint32(4, true);
    if (format < 1 || format > 2) throw new Error(`key-value store format ${format} is unknown to this code (it reads 1 and 2)`);
    const perSeg = dv.getUint32(12, true);
    const nSegs = dv.getUint32(16, true);
    if (perSeg === 0 || nSegs > MAX_SEGS || perSeg * nSegs !== dv.getUint32(8, true)) throw new Error('key-value store root is inconsistent (segments × records per segment ≠ capacity)');
    const addrs = Array.from({ length: nSegs }, (_, i) => Number(dv.getBigUint64(48 + 8 * i, true)));
    const s = new KvStore(rootAddr, root, mapRuns(mem, addrs, perSeg * RECORD, true));
    if (format === 2) {
      if (understands >= 2) s.#openRevisions(mem);
      else s.#dropRevisions(mem); // format-1 code: release the block, write format 1
    }
    return s;
  }

  get format(): number {
    return this.#dv.getUint32(4, true);
  }

  get size(): number {
    return this.#dv.getUint32(20, true);
  }

  get bytes(): number {
    return ROOT + this.capacity * RECORD + (this.#revs ? this.capacity * 4 + ROOT : 0);
  }

  get updates(): number {
    return this.#dv.getUint32(36, true);
  }

  set updates(n: number) {
    this.#dv.setUint32(36, n, true);
  }

  /** The running checksum: order-independent sums of every live record's two hashes. */
  get checksum(): string {
    return this.#dv.getUint32(28, true).toString(16).padStart(8, '0') + this.#dv.getUint32(32, true).toString(16).padStart(8, '0');
  }

  /** Every block this store uses (root, segments, revision blocks): what must be preserved. */
  blocks(): Array<{ addr: number; size: number }> {
    const out = [{ addr: this.rootAddr, size: ROOT }];
    const add = (addrs: number[], size: number): void => {
      for (const r of runs(addrs, size)) out.push({ addr: r.addr, size: r.count * size });
    };
    add(Array.from({ length: this.#segs.length }, (_, i) => Number(this.#dv.getBigUint64(48 + 8 * i, true))), this.#perSeg * RECORD);
    const revRoot = Number(this.#dv.getBigUint64(40, true));
    if (revRoot && this.#revs) {
      out.push({ addr: revRoot, size: ROOT });
      const r = this.#revRootDv!;
      add(Array.from({ length: this.#revs.length }, (_, i) => Number(r.getBigUint64(8 + 8 * i, true))), this.#perSeg * 4);
    }
    return out;
  }

  #revRootDv: DataView | null = null;

  /** Format 1 → 2: add the revision block (zeroed: every record starts at revision 0). */
  upgrade(mem: StoreMemory): void {
    if (this.format === 2) return;
    const per = this.#perSeg;
    const n = this.#segs.length;
    const revRoot = mem.alloc(ROOT);
    const rr = mem.view(revRoot, ROOT);
    const rdv = new DataView(rr.buffer, rr.byteOffset, ROOT);
    rdv.setUint32(0, n, true);
    const base = mem.alloc(n * per * 4); // zeros: every record starts at revision 0
    const addrs = Array.from({ length: n }, (_, i) => base + i * per * 4);
    addrs.forEach((a, i) => rdv.setBigUint64(8 + 8 * i, BigInt(a), true));
    this.#revs = mapRuns(mem, addrs, per * 4, false).map((v) => new Uint32Array(v.buffer, v.byteOffset, per));
    this.#revRootDv = rdv;
    this.#dv.setBigUint64(40, BigInt(revRoot), true);
    this.#dv.setUint32(4, 2, true);
  }

  #openRevisions(mem: StoreMemory): void {
    const revRoot = Number(this.#dv.getBigUint64(40, true));
    mem.claim?.(revRoot);
    const rr = mem.view(revRoot, ROOT);
    const rdv = new DataView(rr.buffer, rr.byteOffset, ROOT);
    const n = rdv.getUint32(0, true);
    const per = this.#perSeg;
    if (n !== this.#segs.length) throw new Error(`key-value store revision block lists ${n} segments, the store has ${this.#segs.length}`);
    const addrs = Array.from({ length: n }, (_, i) => Number(rdv.getBigUint64(8 + 8 * i, true)));
    this.#revs = mapRuns(mem, addrs, per * 4, true).map((v) => new Uint32Array(v.buffer, v.byteOffset, per));
    this.#revRootDv = rdv;
  }

  #dropRevisions(mem: StoreMemory): void {
    const revRoot = Number(this.#dv.getBigUint64(40, true));
    if (mem.release) {
      const rr = mem.view(revRoot, ROOT);
      const rdv = new DataView(rr.buffer, rr.byteOffset, ROOT);
      const n = Math.min(rdv.getUint32(0, true), MAX_SEGS);
      const addrs = Array.from({ length: n }, (_, i) => Number(rdv.getBigUint64(8 + 8 * i, true)));
      for (const r of runs(addrs, this.#perSeg * 4)) mem.release(r.addr);
      mem.release(revRoot);
    }
    this.#dv.setBigUint64(40, 0n, true);
    this.#dv.setUint32(4, 1, true);
  }

  #loc(slot: number): [DataView, Uint8Array, number] {
    const seg = Math.floor(slot / this.#perSeg);
    return [this.#segDv[seg]!, this.#segs[seg]!, (slot - seg * this.#perSeg) * RECORD];
  }

  #find(key: Uint8Array, h: number): { slot: number; live: boolean } {
    let firstFree = -1;
    for (let i = 0, slot = h % this.capacity; i < this.capacity; i++, slot = slot + 1 === this.capacity ? 0 : slot + 1) {
      const [dv, b, o] = this.#loc(slot);
      const st = b[o]!;
      if (st === 0) return { slot: firstFree >= 0 ? firstFree : slot, live: false };
      if (st === 2) {
        if (firstFree < 0) firstFree = slot;
        continue;
      }
      if (dv.getUint32(o + 4, true) === h && b[o + 1] === key.length && equal(b, o + 8, key)) return { slot, live: true };
    }
    return { slot: firstFree, live: false };
  }

  /** Hashes of the record in `slot` (two lanes; 0,0 when not live). */
  #recordHash(slot: number): [number, number] {
    const [dv, b, o] = this.#loc(slot);
    if (b[o] !== 1) return [0, 0];
    const kl = b[o + 1]!;
    const vl = dv.getUint16(o + 2, true);
    const a = fnv(fnv(0x811c9dc5, b, o + 8, kl), b, o + 40, vl);
    const c = fnv(fnv(0x01000193 ^ kl, b, o + 40, vl), b, o + 8, kl);
    return [a, c];
  }

  #account(slot: number, before: [number, number], after: [number, number]): void {
    const dv = this.#dv;
    dv.setUint32(28, (dv.getUint32(28, true) - before[0] + after[0]) >>> 0, true);
    dv.setUint32(32, (dv.getUint32(32, true) - before[1] + after[1]) >>> 0, true);
    const sc = this.#scan;
    if (sc && slot >= sc.cursor) {
      sc.adjA = (sc.adjA + before[0] - after[0]) >>> 0;
      sc.adjB = (sc.adjB + before[1] - after[1]) >>> 0;
    }
  }

  get(key: Uint8Array): { value: Buffer; rev: number } | undefined {
    const { slot, live } = this.#find(key, fnv(0x811c9dc5, key, 0, key.length));
    if (!live) return undefined;
    const [dv, b, o] = this.#loc(slot);
    const value = Buffer.from(b.subarray(o + 40, o + 40 + dv.getUint16(o + 2, true)));
    return { value, rev: this.#revs ? this.#rev(slot) : 0 };
  }

  #rev(slot: number): number {
    const per = this.#perSeg;
    return this.#revs![Math.floor(slot / per)]![slot % per]!;
  }

  /** Insert or overwrite; returns the record's revision (0 in format 1). */
  put(key: Uint8Array, value: Uint8Array): number {
    if (key.length === 0 || key.length > MAX_KEY) throw new RangeError(`key must be 1..${MAX_KEY} bytes, not ${key.length}`);
    if (value.length > MAX_VALUE) throw new RangeError(`value must be at most ${MAX_VALUE} bytes, not ${value.length}`);
    const h = fnv(0x811c9dc5, key, 0, key.length);
    const { slot, live } = this.#find(key, h);
    if (!live) {
      const used = this.size + this.#dv.getUint32(24, true);
      if (slot < 0 || used + 1 > this.capacity * 0.9) throw new StoreFullError(`store full: ${this.size} entries in ${this.capacity} slots`);
    }
    const before = this.#recordHash(slot);
    const [dv, b, o] = this.#loc(slot);
    const wasTomb = b[o] === 2;
    b[o] = 1;
    b[o + 1] = key.length;
    dv.setUint16(o + 2, value.length, true);
    dv.setUint32(o + 4, h, true);
    b.set(key, o + 8);
    b.set(value, o + 40);
    b.fill(0, o + 40 + value.length, o + RECORD);
    this.#account(slot, before, this.#recordHash(slot));
    if (!live) {
      this.#dv.setUint32(20, this.size + 1, true);
      if (wasTomb) this.#dv.setUint32(24, this.#dv.getUint32(24, true) - 1, true);
    }
    if (!this.#revs) return 0;
    const per = this.#perSeg;
    const r = this.#revs[Math.floor(slot / per)]!;
    return (r[slot % per] = (live ? r[slot % per]! : 0) + 1);
  }

  delete(key: Uint8Array): boolean {
    const { slot, live } = this.#find(key, fnv(0x811c9dc5, key, 0, key.length));
    if (!live) return false;
    const before = this.#recordHash(slot);
    const [, b, o] = this.#loc(slot);
    b[o] = 2;
    this.#account(slot, before, [0, 0]);
    this.#dv.setUint32(20, this.size - 1, true);
    this.#dv.setUint32(24, this.#dv.getUint32(24, true) + 1, true);
    return true;
  }

  /**
   * Recompute the checksum from the records themselves, at most `slice` records and about a
   * millisecond per event-loop turn, and compare it with the running one as it stood when
   * verify() was called (the state as handed over, when called before serving). The scan
   * itself starts `delayMs` later; writes meanwhile are accounted for like writes during the
   * scan. While `gate` is closed (an update is being prepared) the scan waits, taking no CPU.
   */
  async verify(slice = 4096, delayMs = 0, gate: Gate = OPEN): Promise<{ ok: boolean; expected: string; computed: string; ms: number }> {
    const expected = this.checksum;
    if (this.#scan) throw new Error('a verification is already running');
    const sc = (this.#scan = { cursor: 0, adjA: 0, adjB: 0 });
    let a = 0;
    let b = 0;
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
    const t0 = performance.now();
    try {
      while (sc.cursor < this.capacity) {
        await gate.passed();
        const end = Math.min(this.capacity, sc.cursor + slice);
        const until = performance.now() + 1;
        for (let s = sc.cursor; s < end; s++) {
          const h = this.#recordHash(s);
          a = (a + h[0]) >>> 0;
          b = (b + h[1]) >>> 0;
          sc.cursor = s + 1;
          if ((s & 255) === 255 && performance.now() > until) break;
        }
        if (sc.cursor < this.capacity) await new Promise((r) => setImmediate(r));
      }
    } finally {
      this.#scan = null;
    }
    const computed = ((a + sc.adjA) >>> 0).toString(16).padStart(8, '0') + ((b + sc.adjB) >>> 0).toString(16).padStart(8, '0');
    return { ok: computed === expected, expected, computed, ms: Math.round(performance.now() - t0) };
  }

  /** Every live entry (for the JSON-restart contender). */
  *entries(): Generator<[Buffer, Buffer]> {
    for (let s = 0; s < this.capacity; s++) {
      const [dv, b, o] = this.#loc(s);
      if (b[o] !== 1) continue;
      yield [Buffer.from(b.subarray(o + 8, o + 8 + b[o + 1]!)), Buffer.from(b.subarray(o + 40, o + 40 + dv.getUint16(o + 2, true)))];
    }
  }
}

/**
 * Views over `n` blocks of `size` bytes at `addrs`, claiming (after an update) each run of
 * contiguous blocks once and viewing it whole: one large view costs V8 one GC where many
 * small ones cost one per 64 MiB (V8 counts external memory and collects as it grows).
 */
function mapRuns(mem: StoreMemory, addrs: number[], size: number, claim: boolean): Uint8Array[] {
  if (claim && mem.claim) {
    // Claim each handed-over block once: a block holds every address up to its size.
    let start = -1;
    let end = -1;
    for (const a of addrs) {
      if (a >= start && a + size <= end) continue;
      start = a;
      end = a + mem.claim(a);
    }
  }
  const out: Uint8Array[] = [];
  for (const r of runs(addrs, size, 2 ** 31)) {
    const v = mem.view(r.addr, r.count * size);
    for (let k = 0; k < r.count; k++) out.push(v.subarray(k * size, (k + 1) * size));
  }
  return out;
}

/**
 * Runs of contiguous blocks of `size` bytes among `addrs`, in order, each at most `maxBytes`
 * long: a run is what was allocated as one block (and is freed as one).
 */
function runs(addrs: number[], size: number, maxBytes = Infinity): Array<{ addr: number; count: number }> {
  const out: Array<{ addr: number; count: number }> = [];
  for (const a of addrs) {
    const last = out[out.length - 1];
    if (last && a === last.addr + last.count * size && (last.count + 1) * size <= maxBytes) last.count++;
    else out.push({ addr: a, count: 1 });
  }
  return out;
}

function equal(b: Uint8Array, off: number, key: Uint8Array): boolean {
  for (let i = 0; i < key.length; i++) if (b[off + i] !== key[i]) return false;
  return true;
}

/** Holds background work back while closed (the service closes it while an update is prepared). */
export class Gate {
  #open = true;
  #waiters: Array<() => void> = [];

  get open(): boolean {
    return this.#open;
  }

  close(): void {
    this.#open = false;
  }

  reopen(): void {
    this.#open = true;
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Resolves at once when open, else when reopened. */
  passed(): Promise<void> {
    return this.#open ? Promise.resolve() : new Promise((r) => this.#waiters.push(r));
  }
}

const OPEN = new Gate();

/** Plain process memory: what a service without luo has (lost when the process ends). */
export function heapMemory(): StoreMemory {
  const blocks = new Map<number, Uint8Array>();
  let next = 4096;
  return {
    alloc(size) {
      const a = next;
      next += size + 4096;
      blocks.set(a, new Uint8Array(size));
      return a;
    },
    view(addr, len) {
      for (const [a, b] of blocks) if (addr >= a && addr + len <= a + b.length) return b.subarray(addr - a, addr - a + len);
      throw new RangeError(`no block holds [${addr}, +${len})`);
    },
  };
}

/** The deterministic seed data: entry i. */
export function seedEntry(i: number): [Buffer, Buffer] {
  return [Buffer.from(`key:${i}`), Buffer.from(`value ${i} ${'x'.repeat(20 + (i % 40))}`)];
}

/** Fill `n` seed entries. */
export function seed(store: KvStore, n: number): void {
  for (let i = 0; i < n; i++) {
    const [k, v] = seedEntry(i);
    store.put(k, v);
  }
}
