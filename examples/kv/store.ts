/*
 * examples/kv/store: the key-value service's store, kept in luo.map (docs/state.md): under
 * luo every byte of it is in preserved memory, and the next version opens it where it is, in
 * O(1), without a byte layout of its own. Without luo (the pm2 and restart-with-JSON
 * contenders of the bench) the same maps live in plain process memory (heapMaps()).
 *
 *   "kv"           key → value (bytes); the map's version is the store's format
 *   "kv-meta"      the running checksum's two lanes, the capacity, the updates survived
 *   "kv-revisions" format 2 only: key → revision (a key without one is at revision 0)
 *
 * Lifecycle:
 *   open(maps, format, capacity?)  a cold start (capacity given): empty; after an update: the
 *                     maps as the previous version left them. Format 1 → 2 (v2 after v1):
 *                     revisions start empty, O(1); 2 → 1 (v1 after v2): "kv-revisions" is
 *                     dropped (luo.forget: its memory released, not handed over again).
 *   put/get/delete    every write keeps the running checksum (order-independent sums of each
 *                     entry's two hashes) in "kv-meta"
 *   verify()          recompute the checksum from every entry, in slices over the index, while
 *                     the service keeps writing (a write to a slot not yet scanned is accounted
 *                     for; an index rebuilt meanwhile starts the scan again), and compare with
 *                     the running one: proves the memory arrived intact. Never blocks the loop
 *                     for more than about a millisecond; waits while its gate is closed.
 * Unhappy paths: a key over 32 bytes or a value over 88 is refused (RangeError); a store 90%
 * full refuses inserts (StoreFullError); a format this code does not know is refused at open
 * (luo.map's EPROTO); from FROZEN writes raise EBUSY (luo.map).
 */
import { migrateMap, PreservedMap, type MapOptions, type StateMemory } from 'luo';

export const MAX_KEY = 32;
export const MAX_VALUE = 88;
/** The store's size budget per entry, for sizing by bytes (the bench's state sizes). */
export const RECORD = 128;

/** Where the store's maps come from: luo.map under luo, plain memory without. */
export interface StoreMaps {
  map(name: string, opts?: MapOptions): PreservedMap;
  /** Give a map's memory back (luo.forget). */
  drop(name: string): void;
}

export class StoreFullError extends Error {
  readonly code = 'ENOSPC';
}

/** FNV-1a over `b`, from `h`. */
function fnv(h: number, b: Uint8Array): number {
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i]!, 16777619);
  return h >>> 0;
}

/** An entry's two hashes (the checksum's lanes). */
function hashes(k: Uint8Array, v: Uint8Array): [number, number] {
  return [fnv(fnv(0x811c9dc5, k), v), fnv(fnv(0x01000193 ^ k.length, v), k)];
}

const asBuffer = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

export class KvStore {
  readonly capacity: number;
  /** The format this store had before this version opened it, if it changed. */
  readonly migrated: { from: number; to: number } | null;
  #data: PreservedMap;
  #meta: PreservedMap;
  #revs: PreservedMap | null;
  #scan: { cursor: number; adjA: number; adjB: number; gen: number } | null = null;

  private constructor(data: PreservedMap, meta: PreservedMap, revs: PreservedMap | null, migrated: { from: number; to: number } | null) {
    this.#data = data;
    this.#meta = meta;
    this.#revs = revs;
    this.migrated = migrated;
    this.capacity = meta.get('capacity') as number;
  }

  /** The largest number of entries whose budget fits in `bytes`. */
  static capacityFor(bytes: number): number {
    return Math.max(16, Math.floor(bytes / RECORD));
  }

  /**
   * The store in `maps`, in `format` (this code's). A new one needs `capacity`; an existing one
   * keeps its own, and moves to `format` (1 → 2 adds revisions, 2 → 1 drops them).
   */
  static open(maps: StoreMaps, format: 1 | 2, capacity?: number): KvStore {
    let from = 0;
    const data = maps.map('kv', {
      version: format,
      migrate: { 1: (m) => void (from = m.version) }, // revisions start empty: nothing to rewrite
      downgrade: { 2: (m) => void (from = m.version) },
    });
    const meta = maps.map('kv-meta');
    if (meta.get('capacity') === undefined) {
      if (capacity === undefined) throw new Error('no key-value store here, and no capacity to make one with');
      if (!Number.isInteger(capacity) || capacity < 16) throw new RangeError(`capacity must be an integer of at least 16, not ${capacity}`);
      meta.set('capacity', capacity).set('sumA', 0).set('sumB', 0).set('updates', 0);
    }
    if (from === 2) maps.drop?.('kv-revisions');
    const revs = format === 2 ? maps.map('kv-revisions') : null;
    if (from === 1 && revs) revs.clear(); // fresh revisions (one left by an earlier format 2 is stale)
    return new KvStore(data, meta, revs, from ? { from, to: format } : null);
  }

  get format(): number {
    return this.#data.version;
  }

  get size(): number {
    return this.#data.size;
  }

  /** Bytes of preserved memory the store's maps hold. */
  get bytes(): number {
    return [this.#data, this.#meta, this.#revs].reduce((n, m) => n + (m ? m.stats().bytesReserved : 0), 0);
  }

  get updates(): number {
    return this.#meta.get('updates') as number;
  }

  set updates(n: number) {
    this.#meta.set('updates', n);
  }

  /** The running checksum: order-independent sums of every live entry's two hashes. */
  get checksum(): string {
    return lane(this.#meta.get('sumA') as number) + lane(this.#meta.get('sumB') as number);
  }

  #account(slot: number, before: [number, number], after: [number, number]): void {
    const m = this.#meta;
    m.set('sumA', ((m.get('sumA') as number) - before[0] + after[0]) >>> 0);
    m.set('sumB', ((m.get('sumB') as number) - before[1] + after[1]) >>> 0);
    const sc = this.#scan;
    if (sc && slot >= sc.cursor && sc.gen === this.#data.generation) {
      sc.adjA = (sc.adjA + before[0] - after[0]) >>> 0;
      sc.adjB = (sc.adjB + before[1] - after[1]) >>> 0;
    }
  }

  get(key: Uint8Array): { value: Buffer; rev: number } | undefined {
    const v = this.#data.get(key) as Uint8Array | undefined;
    if (v === undefined) return undefined;
    return { value: asBuffer(v), rev: this.#revs ? ((this.#revs.get(key) as number | undefined) ?? 0) : 0 };
  }

  /** Insert or overwrite; returns the entry's revision (0 in format 1). */
  put(key: Uint8Array, value: Uint8Array): number {
    if (key.length === 0 || key.length > MAX_KEY) throw new RangeError(`key must be 1..${MAX_KEY} bytes, not ${key.length}`);
    if (value.length > MAX_VALUE) throw new RangeError(`value must be at most ${MAX_VALUE} bytes, not ${value.length}`);
    const old = this.#data.get(key) as Uint8Array | undefined;
    if (old === undefined && this.size + 1 > this.capacity * 0.9) throw new StoreFullError(`store full: ${this.size} entries of ${this.capacity}`);
    this.#data.set(key, value);
    this.#account(this.#scan ? this.#data.slotOf(key) : -1, old ? hashes(key, old) : [0, 0], hashes(key, value));
    if (!this.#revs) return 0;
    const rev = (old !== undefined ? ((this.#revs.get(key) as number | undefined) ?? 0) : 0) + 1;
    this.#revs.set(key, rev);
    return rev;
  }

  delete(key: Uint8Array): boolean {
    const old = this.#data.get(key) as Uint8Array | undefined;
    if (old === undefined) return false;
    const slot = this.#scan ? this.#data.slotOf(key) : -1;
    this.#data.delete(key);
    this.#revs?.delete(key);
    this.#account(slot, hashes(key, old), [0, 0]);
    return true;
  }

  /**
   * Recompute the checksum from the entries themselves, about a millisecond per event-loop
   * turn, and compare it with the running one as it stood when verify() was called (the state
   * as handed over, when called before serving). The scan itself starts `delayMs` later;
   * writes meanwhile are accounted for like writes during the scan. While `gate` is closed
   * (an update is being prepared) the scan waits, taking no CPU.
   */
  async verify(slice = 4096, delayMs = 0, gate: Gate = OPEN): Promise<{ ok: boolean; expected: string; computed: string; ms: number }> {
    let expected = this.checksum;
    if (this.#scan) throw new Error('a verification is already running');
    const data = this.#data;
    const sc = (this.#scan = { cursor: 0, adjA: 0, adjB: 0, gen: data.generation });
    let a = 0;
    let b = 0;
    const add = (k: unknown, v: unknown): void => {
      const h = hashes(k as Uint8Array, v as Uint8Array);
      a = (a + h[0]) >>> 0;
      b = (b + h[1]) >>> 0;
    };
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
    const t0 = performance.now();
    try {
      while (sc.cursor < data.slots) {
        await gate.passed();
        if (sc.gen !== data.generation) {
          // The index was rebuilt (it grew): every entry moved. Start again from here.
          Object.assign(sc, { cursor: 0, adjA: 0, adjB: 0, gen: data.generation });
          a = b = 0;
          expected = this.checksum;
        }
        const end = Math.min(data.slots, sc.cursor + slice);
        const until = performance.now() + 1;
        while (sc.cursor < end && performance.now() <= until) {
          const to = Math.min(end, sc.cursor + 256);
          data.scanSlots(sc.cursor, to, add);
          sc.cursor = to;
        }
        if (sc.cursor < data.slots) await new Promise((r) => setImmediate(r));
      }
    } finally {
      this.#scan = null;
    }
    const computed = lane((a + sc.adjA) >>> 0) + lane((b + sc.adjB) >>> 0);
    return { ok: computed === expected, expected, computed, ms: Math.round(performance.now() - t0) };
  }

  /** Every live entry (for the JSON-restart contender). */
  *entries(): Generator<[Buffer, Buffer]> {
    for (const [k, v] of this.#data) yield [asBuffer(k as Uint8Array), asBuffer(v as Uint8Array)];
  }
}

const lane = (n: number): string => n.toString(16).padStart(8, '0');

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

/** Plain process memory for PreservedMaps: what a service without luo has (lost when the
 *  process ends). `bytes` counts what it holds. */
export function heapMemory(): StateMemory & { readonly bytes: number } {
  const blocks = new Map<number, Uint8Array>();
  let next = 4096;
  let bytes = 0;
  return {
    alloc(size) {
      const a = next;
      next += Math.ceil(size / 4096) * 4096 + 4096;
      blocks.set(a, new Uint8Array(size));
      bytes += size;
      return a;
    },
    view(addr, len) {
      const b = blocks.get(addr);
      if (b && len <= b.length) return b.subarray(0, len);
      for (const [a, x] of blocks) if (addr >= a && addr + len <= a + x.length) return x.subarray(addr - a, addr - a + len);
      throw new RangeError(`no block holds [${addr}, +${len})`);
    },
    free(addr) {
      bytes -= blocks.get(addr)?.length ?? 0;
      blocks.delete(addr);
    },
    claim() {
      throw new Error('plain memory is never handed over');
    },
    claimFree() {
      throw new Error('plain memory is never handed over');
    },
    get bytes() {
      return bytes;
    },
  };
}

/** Maps in plain memory, by name, versioned and migrated as luo.map does. */
export function heapMaps(mem = heapMemory()): StoreMaps & { mem: ReturnType<typeof heapMemory> } {
  const maps = new Map<string, PreservedMap>();
  return {
    mem,
    map(name, opts = {}) {
      let m = maps.get(name);
      if (!m) maps.set(name, (m = PreservedMap.create(name, mem, opts.version ?? 1)));
      else migrateMap(m, opts.version ?? 1, opts);
      return m;
    },
    drop(name) {
      maps.get(name)?.destroy();
      maps.delete(name);
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
