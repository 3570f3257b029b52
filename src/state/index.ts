/*
 * state: what luo.map and luo.keep give a service (docs/state.md): its own values across an
 * update, without a byte layout of its own. One StateStore per Luo, made at the first
 * luo.map() or luo.keep(); it registers the "luo-state" subsystem, whose payload is the address
 * of a directory (uapi/state.ts) naming every map and kept value.
 *
 * Lifecycle, in the old version:
 *   map(name)        a PreservedMap (state/map.ts), created empty on a cold start
 *   keep(name, spec) spec.save() is called at FREEZE, its value v8-serialized into preserved
 *                    memory (its cost grows with the value: measured in docs/benchmarks.md)
 *   PREPARE          each map reserves room (index slots and segment bytes, a quarter more
 *                    than it holds), since no memory can be preserved or released while the
 *                    handover is prepared: a write that needs more than that raises EBUSY, a
 *                    release waits until the update ends (CANCEL) or is left to the next
 *                    version's FINISH. The directory is written: the payload.
 *   FREEZE           each keep's save() runs; the directory is written again with them.
 *   FROZEN           (every freeze callback done, the file handlers' last: requests they
 *                    drained may have written) maps refuse writes from here (EBUSY) and write
 *                    their checksums.
 *   CANCEL           maps writable again; the keeps' blocks and the directory released.
 * In the next version:
 *   map(name, { version, migrate })  opens the map handed over under that name: O(1) in its
 *                    entries and bytes (state/map.ts). Then, if the data's version is older
 *                    than `version`, migrate[v](map) for each version in turn; newer than
 *                    `version`, downgrade[v](map) down to it if given, else EPROTO (this code
 *                    cannot read it; the map is carried on untouched, for a version that can). A map handed over damaged:
 *                    EBADMSG naming what, nothing lost elsewhere, the service up; with
 *                    onDamaged: 'fresh' it starts empty instead (said on stderr).
 *   keep(name, spec) the kept value deserialized, migrated the same way, given to spec.load().
 *   Names the next version never opens are released at its FINISH (as any unclaimed memory).
 *   Until FINISH the next version's writes are its own (the arena is copy-on-write): if the
 *   update rolls back, the previous version finds its maps as it froze them, in the format it
 *   wrote (a migration never reaches it).
 */
import v8 from 'node:v8';
import { fail, LuoError } from '../errors.js';
import {
  DIR_ENTRY, DIR_HEAD, DIR_LAYOUT, DIR_MAGIC, KIND_KEEP, KIND_MAP, NAME_MAX, STATE_SUBSYSTEM,
} from '../uapi/state.js';
import { crc32Skipping } from '../uapi/crc.js';
import { PreservedMap, type StateMemory } from './map.js';

export { PreservedMap, type StateMemory, type Key, type Value, type MapStats } from './map.js';

/** A subsystem, as luo's registry takes it (luo/subsystems.ts), without importing it. */
export interface StateSubsystem {
  readonly name: string;
  prepare(): bigint;
  freeze(data: bigint): bigint;
  cancel(data: bigint): void;
}

export interface StateHost {
  mem: StateMemory;
  /** Register the subsystem (raises what registration raises). */
  register(sub: StateSubsystem): void;
  /** The payload handed over for the subsystem, or null (a cold start, or none). */
  incoming(): bigint | null;
  warn(msg: string): void;
}

type Migrations<T> = Record<number, (x: T) => T | void>;

export interface MapOptions {
  /** The version of this code's data format (default 1). */
  version?: number;
  /** migrate[v](map): from version v to v + 1, in place. */
  migrate?: Migrations<PreservedMap>;
  /** downgrade[v](map): from version v to v - 1, for code older than the data (after a newer
   *  version committed); without it such data is refused (EPROTO). */
  downgrade?: Migrations<PreservedMap>;
  /** A map handed over damaged: 'throw' (EBADMSG, the default) or 'fresh' (start empty). */
  onDamaged?: 'throw' | 'fresh';
  /** Keep decoded strings and numbers on the JS heap too (true: all; a number: at most that
   *  many): gets at a JS Map's speed and memory. Off by default. */
  cache?: boolean | number;
}

export interface KeepSpec<T = unknown> {
  /** At FREEZE: the value to carry (anything v8.serialize takes: Maps, Dates, typed arrays…). */
  save(): T;
  /** The next version, at keep(): the value carried (after migrations). */
  load(value: T): void;
  version?: number;
  /** migrate[v](value): from version v to v + 1; returns the new value (or changes it). */
  migrate?: Migrations<unknown>;
  /** downgrade[v](value): from version v to v - 1. */
  downgrade?: Migrations<unknown>;
}

interface DirEntry { kind: number; version: number; addr: number; size: number }

const NAME_RE = /^[A-Za-z0-9,._+-]{1,63}$/;

export class StateStore {
  readonly #host: StateHost;
  readonly #maps = new Map<string, PreservedMap>();
  /** Maps this code could not read (EPROTO: a version it has no steps to): never given out,
   *  but carried on, so that a version that can read them still finds them. */
  readonly #unread = new Map<string, PreservedMap>();
  readonly #keeps = new Map<string, { spec: KeepSpec; version: number }>();
  /** Handed over, not yet opened. */
  #incoming: Map<string, DirEntry> | null = null;
  /** Blocks written for the update (the directory, the kept values): released at CANCEL. */
  #outgoing: Array<[number, number]> = [];
  /** Releases that had to wait (the handover was being prepared). */
  #deferred: Array<[number, number]> = [];
  readonly #mem: StateMemory;

  constructor(host: StateHost) {
    this.#host = host;
    const mem = host.mem;
    this.#mem = {
      alloc: (n) => {
        try {
          return mem.alloc(n);
        } catch (e) {
          if ((e as LuoError).code === 'EBUSY') throw fail('EBUSY', `no preserved memory can be allocated while an update is prepared (between PREPARE and the end of the update): this write needs more than the room reserved at PREPARE`);
          throw e;
        }
      },
      view: (a, n) => mem.view(a, n),
      free: (a, n) => {
        try {
          mem.free(a, n);
        } catch (e) {
          if ((e as LuoError).code !== 'EBUSY') throw e;
          this.#deferred.push([a, n]);
        }
      },
      claim: (a) => mem.claim(a),
      claimFree: (a) => mem.claimFree(a),
    };
    host.register({
      name: STATE_SUBSYSTEM,
      prepare: () => this.#prepare(),
      freeze: (d) => this.#freeze(d),
      cancel: () => this.#cancel(),
    });
    const payload = host.incoming();
    if (payload !== null && payload !== 0n) this.#incoming = this.#readDirectory(Number(payload));
  }

  // ---------------------------------------------------------------------------- the API

  map(name: string, opts: MapOptions = {}): PreservedMap {
    checkName(name);
    const version = checkVersion(name, opts.version ?? 1);
    if (this.#unread.has(name)) throw fail('EPROTO', `"${name}" holds data of version ${this.#unread.get(name)!.version}, which this code cannot read; it is carried on untouched`);
    const had = this.#maps.get(name);
    if (had) {
      if (opts.cache !== undefined) had.setCache(cacheSize(opts.cache));
      return had;
    }
    if (this.#keeps.has(name)) throw fail('EEXIST', `"${name}" is already a kept value`);
    const e = this.#take(name);
    let m: PreservedMap;
    if (e && e.kind === KIND_MAP) {
      try {
        m = PreservedMap.open(name, this.#mem, e.addr, e.size);
      } catch (err) {
        if ((err as LuoError).code !== 'EBADMSG' || opts.onDamaged !== 'fresh') throw err;
        this.#host.warn(`luo: ${(err as Error).message.replace(/; it was not opened.*$/, '')}: started empty (onDamaged: 'fresh')`);
        // The damaged header, if it was claimed, goes now (the rest was never claimed: FINISH).
        try {
          this.#mem.free(e.addr, 4096);
        } catch { /* not claimed */ }
        m = PreservedMap.create(name, this.#mem, version);
      }
      try {
        migrateMap(m, version, opts);
      } catch (err) {
        this.#unread.set(name, m); // not lost: handed over again as it is
        throw err;
      }
    } else {
      if (e) throw fail('EEXIST', `"${name}" was handed over as a kept value, not a map`);
      m = PreservedMap.create(name, this.#mem, version);
    }
    if (opts.cache) m.setCache(cacheSize(opts.cache));
    this.#maps.set(name, m);
    return m;
  }

  keep<T>(name: string, spec: KeepSpec<T>): void {
    checkName(name);
    if (!spec || typeof spec.save !== 'function' || typeof spec.load !== 'function') throw fail('EINVAL', `keep("${name}"): give { save, load }`);
    const version = checkVersion(name, spec.version ?? 1);
    if (this.#keeps.has(name)) throw fail('EEXIST', `"${name}" is already kept`);
    if (this.#maps.has(name)) throw fail('EEXIST', `"${name}" is already a map`);
    const e = this.#take(name);
    if (e && e.kind !== KIND_KEEP) throw fail('EEXIST', `"${name}" was handed over as a map, not a kept value`);
    this.#keeps.set(name, { spec: spec as KeepSpec, version });
    if (!e) return;
    let value: unknown;
    try {
      value = v8.deserialize(this.#mem.view(e.addr, e.size));
    } catch (err) {
      throw fail('EBADMSG', `kept value "${name}" (${e.size} bytes) cannot be read back: ${(err as Error).message}`);
    } finally {
      this.#mem.claimFree(e.addr);
    }
    migrateTo(name, e.version, version, spec.migrate, spec.downgrade, (fn) => {
      const out = (fn as (x: unknown) => unknown)(value);
      if (out !== undefined) value = out;
    });
    spec.load(value as T);
  }

  /** Forget a map or kept value: its memory released now, not handed over again (one handed
   *  over and never opened is released too, without waiting for FINISH). */
  forget(name: string): boolean {
    checkName(name);
    const m = this.#maps.get(name) ?? this.#unread.get(name);
    if (m) {
      m.destroy();
      this.#maps.delete(name);
      this.#unread.delete(name);
      return true;
    }
    if (this.#keeps.delete(name)) return true;
    const e = this.#take(name);
    if (!e) return false;
    if (e.kind === KIND_MAP) {
      try {
        PreservedMap.open(name, this.#mem, e.addr, e.size).destroy();
      } catch { /* damaged: what was not claimed goes at FINISH */ }
    } else this.#mem.claimFree(e.addr);
    return true;
  }

  /** The names handed over and not opened yet (they are released at FINISH). */
  get unopened(): string[] {
    return [...(this.#incoming?.keys() ?? [])];
  }

  get names(): string[] {
    return [...this.#maps.keys(), ...this.#keeps.keys()];
  }

  #take(name: string): DirEntry | undefined {
    const e = this.#incoming?.get(name);
    if (e) this.#incoming!.delete(name);
    return e;
  }

  // ---------------------------------------------------------------------------- the update

  #prepare(): bigint {
    for (const m of this.#maps.values()) m.reserve();
    return this.#writeDirectory(false);
  }

  #freeze(data: bigint): bigint {
    // The directory of PREPARE gives way to one with the kept values.
    this.#releaseOutgoing();
    void data;
    return this.#writeDirectory(true);
  }

  /** FROZEN (luo.ts calls it once every freeze callback has run, the file handlers' last: an
   *  HTTP request drained by the server's freeze may still have written): no more writes, the
   *  maps' checksums. */
  frozen(): void {
    for (const m of [...this.#maps.values(), ...this.#unread.values()]) m.freeze();
  }

  #cancel(): void {
    for (const m of [...this.#maps.values(), ...this.#unread.values()]) m.thaw();
    this.#releaseOutgoing();
    const later = this.#deferred;
    this.#deferred = [];
    for (const [a, n] of later) this.#mem.free(a, n);
  }

  #releaseOutgoing(): void {
    const blocks = this.#outgoing;
    this.#outgoing = [];
    for (const [a, n] of blocks) this.#mem.free(a, n);
  }

  #writeDirectory(withKeeps: boolean): bigint {
    const entries: Array<{ name: string } & DirEntry> = [];
    for (const [name, m] of [...this.#maps, ...this.#unread]) entries.push({ name, kind: KIND_MAP, version: m.version, addr: m.address, size: 4096 });
    if (withKeeps) {
      for (const [name, k] of this.#keeps) {
        let bytes: Buffer;
        try {
          bytes = v8.serialize(k.spec.save());
        } catch (e) {
          throw fail('EINVAL', `keep("${name}"): save() returned what v8.serialize cannot take: ${(e as Error).message}`);
        }
        const addr = this.#mem.alloc(Math.max(1, bytes.length));
        this.#outgoing.push([addr, Math.max(1, bytes.length)]);
        this.#mem.view(addr, bytes.length).set(bytes);
        entries.push({ name, kind: KIND_KEEP, version: k.version, addr, size: bytes.length });
      }
    }
    const size = DIR_HEAD + entries.length * DIR_ENTRY;
    const addr = this.#mem.alloc(size);
    this.#outgoing.push([addr, size]);
    const v = this.#mem.view(addr, size);
    const b = Buffer.from(v.buffer, v.byteOffset, size);
    b.fill(0);
    b.writeUInt32LE(DIR_MAGIC, 0);
    b.writeUInt32LE(DIR_LAYOUT, 4);
    b.writeUInt32LE(entries.length, 8);
    entries.forEach((e, i) => {
      const o = DIR_HEAD + i * DIR_ENTRY;
      b[o] = e.kind;
      b[o + 1] = Buffer.byteLength(e.name);
      b.writeUInt32LE(e.version, o + 4);
      b.writeDoubleLE(e.addr, o + 8);
      b.writeDoubleLE(e.size, o + 16);
      b.write(e.name, o + 24, 'latin1');
    });
    b.writeUInt32LE(dirCrc(b), 12);
    return BigInt(addr);
  }

  #readDirectory(addr: number): Map<string, DirEntry> {
    const bad = (what: string): never => {
      throw fail('EBADMSG', `the state directory handed over (luo.map, luo.keep) ${what}`);
    };
    let size: number;
    try {
      size = this.#mem.claim(addr);
    } catch (e) {
      return bad(`is not in the memory handed over: ${(e as Error).message}`);
    }
    const v = this.#mem.view(addr, size);
    const b = Buffer.from(v.buffer, v.byteOffset, size);
    if (size < DIR_HEAD || b.readUInt32LE(0) !== DIR_MAGIC) bad('has a bad magic');
    if (b.readUInt32LE(4) !== DIR_LAYOUT) bad(`has layout ${b.readUInt32LE(4)} (this luo reads ${DIR_LAYOUT})`);
    const n = b.readUInt32LE(8);
    if (DIR_HEAD + n * DIR_ENTRY > size) bad(`names ${n} entries in ${size} bytes`);
    if (b.readUInt32LE(12) !== dirCrc(b.subarray(0, DIR_HEAD + n * DIR_ENTRY))) bad('does not match its checksum');
    const out = new Map<string, DirEntry>();
    for (let i = 0; i < n; i++) {
      const o = DIR_HEAD + i * DIR_ENTRY;
      const len = b[o + 1]!;
      if (len < 1 || len > NAME_MAX) bad(`has a name of ${len} bytes`);
      out.set(b.toString('latin1', o + 24, o + 24 + len), { kind: b[o]!, version: b.readUInt32LE(o + 4), addr: b.readDoubleLE(o + 8), size: b.readDoubleLE(o + 16) });
    }
    // Read: the block itself is not needed any more.
    this.#mem.free(addr, size);
    return out;
  }
}

const cacheSize = (c: boolean | number): number => (c === true ? Infinity : c === false ? 0 : c);

function checkName(name: string): void {
  if (typeof name !== 'string' || !NAME_RE.test(name)) throw fail('EINVAL', `a state name is 1-63 of A-Z a-z 0-9 , . _ + -, not ${JSON.stringify(name)}`);
}

function checkVersion(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1 || v > 0xffffffff) throw fail('EINVAL', `"${name}": version ${v} (an integer from 1)`);
  return v;
}

/**
 * Bring a map's data to `version`: migrate[v] for each version up, downgrade[v] for each
 * version down; EPROTO when a step is missing. (luo.map does it at open; exported for stores
 * that hold a PreservedMap of their own, as the examples' do without luo.)
 */
export function migrateMap(m: PreservedMap, version: number, opts: Pick<MapOptions, 'migrate' | 'downgrade'>): void {
  migrateTo(m.name, m.version, version, opts.migrate, opts.downgrade, (fn, to) => {
    (fn as (x: PreservedMap) => void)(m);
    m.version = to;
  });
}

/** Run the steps from `from` to `to`, up or down; EPROTO when one is missing. */
function migrateTo(name: string, from: number, to: number, up: Record<number, unknown> | undefined, down: Record<number, unknown> | undefined, step: (fn: unknown, to: number) => void): void {
  if (from > to && !down) throw fail('EPROTO', `"${name}" holds data of version ${from}; this code reads up to version ${to} (an older version of the code after a newer one committed: give it downgrade steps, or roll forward)`);
  for (let v = from; v < to; v++) {
    if (!up?.[v]) throw fail('EPROTO', `"${name}" holds data of version ${v}; this code wants ${to} and has no migration from ${v} (migrate[${v}])`);
    step(up[v], v + 1);
  }
  for (let v = from; v > to; v--) {
    if (!down?.[v]) throw fail('EPROTO', `"${name}" holds data of version ${v}; this code wants ${to} and has no way down from ${v} (downgrade[${v}])`);
    step(down[v], v - 1);
  }
}

/** The directory's checksum: its field is bytes 12-15. */
const dirCrc = (b: Uint8Array): number => crc32Skipping(b, 12);
