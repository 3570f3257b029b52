/*
 * kho/kho: Kexec HandOver for a process (shared/reference/luo-v3.md §5).
 *
 * Outgoing lifecycle (this image):
 *   preservePhys/preserveFolio, addSubtree  (any number, any order)
 *   → finalize()   builds the "kho-v1" root tree in the arena; EEXIST if already finalized.
 *                  While finalized, preserve/unpreserve and add/remove subtree raise EBUSY.
 *   → abort()      undoes finalize (ENOENT if not finalized); client preservations stay, as
 *                  in v3's "kho: don't unpreserve memory during abort".
 *   → handover()   the kho-v1 entry for the next image (only when finalized); src/handover
 *                  carries it and the arena there.
 *
 * Incoming lifecycle (the next image):
 *   Kho.create()         → cold boot: a fresh arena.
 *   Kho.adopt(entry)     → adopt the arena fd, decode and check the root tree (compatible,
 *                          arena size, memory map sorted/aligned/in bounds/disjoint, every
 *                          subtree inside preserved memory and a valid FDT), reserve the
 *                          preserved pages, then release every other page (hole punch), the
 *                          root tree's own pages included. Preserved memory is then usable at
 *                          the same addresses, zero-copy.
 *   anything wrong       → HandoverError. The caller (Luo.boot, bootKho) makes it fatal (the
 *                          kernel panics) unless it was asked to boot cold.
 *
 * Memory map in the root: `preserved-memory-map` = (u64 address, u64 size) pairs in address
 * order, one per preservation (so granularity survives: restoreFolio needs it). Each subtree
 * node holds `fdt` (its address) and `checksum` (the CRC-32 of its blob at finalize): the
 * consumer of a subtree calls verifySubtree() once it has checked its structure, so that any
 * byte damaged since is the one-line fatal at boot.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { FdtError, HandoverError, fail } from '../errors.js';
import { Fdt, FdtNode, decode, encode, readHeader } from '../fdt/index.js';
import { PAGE_SHIFT, PAGE_SIZE, PageAllocator } from './alloc.js';
import { Arena } from './arena.js';
import { HANDOVER_ENV, KHO_ENTRY, formatKhoEntry, parseKhoEntry } from '../uapi/handover.js';
import { PreservedTree } from './tree.js';

export const KHO_COMPATIBLE = KHO_ENTRY;
const NAME_RE = /^[A-Za-z0-9,._+\-]{1,63}$/;

interface Region { addr: number; size: number }

export interface KhoOptions {
  arenaSize: number;
  /** KHO disabled: finalize/abort raise EOPNOTSUPP, nothing is handed over. */
  enabled?: boolean;
  /** Directory for the debug view (debug/out, debug/in); off when undefined. */
  debugDir?: string;
}

/** CRC-32 of a stored FDT: what finalize records per subtree, and the next image checks. */
export const fdtChecksum = (blob: Uint8Array): number => zlib.crc32(blob) >>> 0;

const isAligned = (n: number): boolean => Number.isSafeInteger(n) && n >= 0 && n % PAGE_SIZE === 0;

export class Kho {
  readonly arena: Arena;
  readonly enabled: boolean;
  readonly debugDir: string | undefined;
  /** How this image booted. */
  readonly bootedFrom: 'cold' | 'handover';
  readonly #alloc: PageAllocator;
  /** Outgoing preservations keyed by address. */
  readonly #preserved = new Map<number, Region & { folio: boolean }>();
  readonly #subtrees = new Map<string, number>();
  #root: Region | null = null;
  /** Incoming: preserved regions handed over and not yet restored, and the subtrees. */
  readonly #incoming = new Map<number, Region>();
  readonly #inSubtrees = new Map<string, number>();
  /** Incoming: each subtree's checksum as written at finalize (images before luo 0.2: none). */
  readonly #inSums = new Map<string, number>();
  readonly #inRoot: Fdt | null;

  private constructor(arena: Arena, opts: KhoOptions, incoming: { root: Fdt; regions: Region[]; subtrees: Map<string, number>; rootRegion: Region } | null) {
    this.arena = arena;
    this.enabled = opts.enabled ?? true;
    this.debugDir = opts.debugDir;
    this.#alloc = new PageAllocator(arena.size / PAGE_SIZE);
    this.#alloc.reserve(0, 1); // address 0 means "nothing" in payloads: never hand it out
    this.bootedFrom = incoming ? 'handover' : 'cold';
    this.#inRoot = incoming?.root ?? null;
    if (incoming) {
      for (const r of incoming.regions) {
        this.#alloc.reserve(r.addr >> PAGE_SHIFT, r.size >> PAGE_SHIFT);
        this.#incoming.set(r.addr, r);
      }
      for (const [k, v] of incoming.subtrees) this.#inSubtrees.set(k, v);
      // Release everything that was not preserved: the gaps between regions, and the root.
      let cursor = PAGE_SIZE;
      for (const r of incoming.regions) {
        if (r.addr > cursor) arena.release(cursor, r.addr - cursor);
        cursor = Math.max(cursor, r.addr + r.size);
      }
      if (arena.size > cursor) arena.release(cursor, arena.size - cursor);
      this.#writeDebug('in', incoming.root, incoming.subtrees);
    }
  }

  /** Cold boot: a fresh arena. */
  static create(opts: KhoOptions): Kho {
    return new Kho(Arena.create(opts.arenaSize), opts, null);
  }

  /**
   * Boot from a handover entry point (the value of LUO_HANDOVER). Raises HandoverError naming
   * what is wrong; on error the inherited arena fd is left open for the caller to decide.
   */
  static adopt(entry: string, opts: Omit<KhoOptions, 'arenaSize'> & { premapped?: Arena | null; private?: boolean }): Kho {
    const { arenaFd: fd, rootAddr, rootSize } = parseKhoEntry(entry);
    let arena: Arena;
    try {
      // A successor mapped the arena before its handover: use that mapping if it is this fd.
      if (opts.premapped && opts.premapped.fd === fd && opts.premapped.isPrivate === (opts.private ?? false)) arena = opts.premapped;
      else {
        opts.premapped?.discard();
        arena = Arena.adopt(fd, { private: opts.private });
      }
    } catch (e) {
      throw new HandoverError(`the arena fd ${fd} named in ${HANDOVER_ENV} is unusable: ${(e as Error).message}`, { cause: e });
    }
    if (!isAligned(rootAddr) || rootAddr === 0 || rootSize < 40 || rootAddr + rootSize > arena.size) {
      throw new HandoverError(`root tree [${rootAddr}, +${rootSize}) is not a valid range of the ${arena.size}-byte arena`);
    }
    let root: Fdt;
    try {
      root = decode(arena.view(rootAddr, rootSize));
    } catch (e) {
      throw new HandoverError(`root tree is corrupt: ${(e as Error).message}`, { cause: e });
    }
    const { regions, subtrees, sums } = Kho.#checkRoot(root, arena);
    const kho = new Kho(arena, { ...opts, arenaSize: arena.size }, { root, regions, subtrees, rootRegion: { addr: rootAddr, size: rootSize } });
    for (const [k, v] of sums) kho.#inSums.set(k, v);
    return kho;
  }

  static #checkRoot(root: Fdt, arena: Arena): { regions: Region[]; subtrees: Map<string, number>; sums: Map<string, number> } {
    const r = root.root;
    const bad = (msg: string): never => {
      throw new HandoverError(`root tree: ${msg}`);
    };
    try {
      if (!r.isCompatible(KHO_COMPATIBLE)) bad(`compatible is ${JSON.stringify(r.stringList('compatible') ?? null)}, expected "${KHO_COMPATIBLE}"`);
      const size = r.u64('arena-size');
      if (size === undefined) bad('no arena-size');
      if (Number(size) !== arena.size) bad(`arena-size ${size} does not match the arena's ${arena.size} bytes`);
      const map = r.u64Array('preserved-memory-map');
      if (map === undefined) bad('no preserved-memory-map');
      if (map!.length % 2 !== 0) bad('preserved-memory-map has an odd number of cells');
      const regions: Region[] = [];
      let last = PAGE_SIZE;
      for (let i = 0; i < map!.length; i += 2) {
        const addr = Number(map![i]);
        const sz = Number(map![i + 1]);
        if (!isAligned(addr) || !isAligned(sz) || sz === 0) bad(`preserved region ${i / 2} [${addr}, +${sz}) is not page-aligned`);
        if (addr < last) bad(`preserved region ${i / 2} at ${addr} overlaps or is out of order`);
        if (addr + sz > arena.size) bad(`preserved region ${i / 2} [${addr}, +${sz}) is outside the arena`);
        regions.push({ addr, size: sz });
        last = addr + sz;
      }
      const subtrees = new Map<string, number>();
      const sums = new Map<string, number>();
      const inPreserved = (a: number, len: number): boolean => regions.some((g) => a >= g.addr && a + len <= g.addr + g.size);
      for (const [name, child] of r.children) {
        const a = Number(child.u64('fdt') ?? bad(`subtree "${name}" has no fdt property`));
        if (!inPreserved(a, 40)) bad(`subtree "${name}" at ${a} is not in preserved memory`);
        try {
          const h = readHeader(arena.view(a, 40), true);
          if (!inPreserved(a, h.totalsize)) bad(`subtree "${name}" runs past its preserved region`);
        } catch (e) {
          if (e instanceof HandoverError) throw e;
          bad(`subtree "${name}" is not a valid FDT: ${(e as Error).message}`);
        }
        subtrees.set(name, a);
        const sum = child.cells('checksum');
        if (sum?.length === 1) sums.set(name, sum[0]!);
      }
      return { regions, subtrees, sums };
    } catch (e) {
      if (e instanceof HandoverError) throw e;
      throw new HandoverError(`root tree: ${(e as Error).message}`, { cause: e });
    }
  }

  // ---------------------------------------------------------------------------------------
  // memory

  /** Zero-copy view of arena memory. EFAULT outside the arena. */
  view(addr: number, len: number): Uint8Array {
    return this.arena.view(addr, len);
  }

  /** Allocate whole pages (never a preserved or incoming page). Returns the address. */
  alloc(size: number): number {
    if (!Number.isSafeInteger(size) || size <= 0) throw fail('EINVAL', `allocation of ${size} bytes`);
    return this.#alloc.alloc(Math.ceil(size / PAGE_SIZE)) * PAGE_SIZE;
  }

  /** Allocate a naturally aligned block of 2^order pages (a folio). */
  allocFolio(order: number): number {
    if (!Number.isInteger(order) || order < 0 || order > 30) throw fail('EINVAL', `folio order ${order}`);
    return this.#alloc.alloc(2 ** order, 2 ** order) * PAGE_SIZE;
  }

  /** Free pages from alloc(); their memory returns to the system. EBUSY while preserved. */
  free(addr: number, size: number): void {
    const len = Math.ceil(size / PAGE_SIZE) * PAGE_SIZE;
    this.#checkRange(addr, len);
    if (this.#overlaps(this.#preserved, addr, len)) throw fail('EBUSY', `pages at ${addr} are preserved; unpreserve them first`);
    if (this.#overlaps(this.#incoming, addr, len)) throw fail('EBUSY', `pages at ${addr} were handed over; restore them first`);
    this.#alloc.free(addr / PAGE_SIZE, len / PAGE_SIZE);
    this.arena.release(addr, len);
  }

  #checkRange(addr: number, size: number): void {
    if (!isAligned(addr) || !isAligned(size) || size === 0) throw fail('EINVAL', `range [${addr}, +${size}) is not page-aligned`);
    if (addr === 0 || addr + size > this.arena.size) throw fail('EINVAL', `range [${addr}, +${size}) is outside the arena`);
  }

  #overlaps(m: Map<number, Region>, addr: number, size: number): Region | undefined {
    for (const r of m.values()) if (r.addr < addr + size && addr < r.addr + r.size) return r;
    return undefined;
  }

  #busyIfFinalized(what: string): void {
    if (this.#root) throw fail('EBUSY', `${what} while KHO is finalized`);
  }

  /**
   * FINISH of an image that mapped the arena copy-on-write (it could still be rolled back):
   * its writes become the arena's (arena.ts). The bytes written back.
   */
  commit(): number {
    const inUse = this.#alloc.usedExtents().map(([p, n]): [number, number] => [p * PAGE_SIZE, n * PAGE_SIZE]);
    return this.arena.commit(inUse);
  }

  // ---------------------------------------------------------------------------------------
  // preservation (outgoing)

  /** Preserve [addr, addr+size) for the next image. EINVAL unaligned, EEXIST overlapping, EBUSY finalized. */
  preservePhys(addr: number, size: number): void {
    this.#preserve(addr, size, false);
  }

  /** Undo preservePhys with the same address and size (EINVAL if the granularity differs). */
  unpreservePhys(addr: number, size: number): void {
    this.#unpreserve(addr, size, false);
  }

  /** Preserve a folio: 2^order pages at an address aligned to its size. */
  preserveFolio(addr: number, order: number): void {
    this.#preserve(addr, this.#folioSize(addr, order), true);
  }

  unpreserveFolio(addr: number, order: number): void {
    this.#unpreserve(addr, this.#folioSize(addr, order), true);
  }

  #folioSize(addr: number, order: number): number {
    if (!Number.isInteger(order) || order < 0 || order > 30) throw fail('EINVAL', `folio order ${order}`);
    const size = PAGE_SIZE * 2 ** order;
    if (addr % size !== 0) throw fail('EINVAL', `folio at ${addr} is not aligned to its ${size} bytes`);
    return size;
  }

  #preserve(addr: number, size: number, folio: boolean): void {
    this.#busyIfFinalized('preserve');
    this.#checkRange(addr, size);
    const o = this.#overlaps(this.#preserved, addr, size);
    if (o) throw fail('EEXIST', `[${addr}, +${size}) overlaps the preserved range [${o.addr}, +${o.size})`);
    this.#alloc.reserve(addr / PAGE_SIZE, size / PAGE_SIZE); // never handed out from now on
    this.#preserved.set(addr, { addr, size, folio });
  }

  #unpreserve(addr: number, size: number, folio: boolean): void {
    this.#busyIfFinalized('unpreserve');
    this.#checkRange(addr, size);
    const p = this.#preserved.get(addr);
    if (!p || p.size !== size || p.folio !== folio) {
      const o = p ?? this.#overlaps(this.#preserved, addr, size);
      if (o) throw fail('EINVAL', `[${addr}, +${size}) does not match the granularity of the preserved ${this.#preserved.get(o.addr)?.folio ? 'folio' : 'range'} [${o.addr}, +${o.size})`);
      throw fail('EINVAL', `[${addr}, +${size}) is not preserved`);
    }
    this.#preserved.delete(addr);
  }

  isPreserved(addr: number): boolean {
    return this.#overlaps(this.#preserved, addr, 1) !== undefined;
  }

  /** Outgoing preserved regions, [address, size] in address order (a successor maps them ahead). */
  get preservedRegions(): Array<[number, number]> {
    return [...this.#preserved.values()].sort((a, b) => a.addr - b.addr).map((r) => [r.addr, r.size]);
  }

  /** Preserved bytes (outgoing). */
  get preservedBytes(): number {
    let n = 0;
    for (const r of this.#preserved.values()) n += r.size;
    return n;
  }

  /** luo_alloc_preserve: allocate pages and preserve them; returns the address. */
  allocPreserve(size: number): number {
    const addr = this.alloc(size);
    try {
      this.preservePhys(addr, Math.ceil(size / PAGE_SIZE) * PAGE_SIZE);
    } catch (e) {
      this.free(addr, size);
      throw e;
    }
    return addr;
  }

  /** Undo allocPreserve: unpreserve and free. */
  unpreserveFree(addr: number, size: number): void {
    const len = Math.ceil(size / PAGE_SIZE) * PAGE_SIZE;
    this.unpreservePhys(addr, len);
    this.free(addr, len);
  }

  // ---------------------------------------------------------------------------------------
  // incoming memory (this image booted from a handover)

  /** Claim a handed-over region (as kho_restore_folio); returns its size. ENOENT if none there. */
  restore(addr: number): number {
    const r = this.#incoming.get(addr);
    if (!r) throw fail('ENOENT', `no handed-over memory starts at ${addr}`);
    this.#incoming.delete(addr);
    return r.size;
  }

  /** kho_restore_folio: claim a handed-over folio; returns its order. */
  restoreFolio(addr: number): number {
    const r = this.#incoming.get(addr);
    if (!r) throw fail('ENOENT', `no handed-over memory starts at ${addr}`);
    const order = Math.log2(r.size / PAGE_SIZE);
    if (!Number.isInteger(order) || addr % r.size !== 0) throw fail('EINVAL', `handed-over range at ${addr} (${r.size} bytes) is not a folio`);
    this.#incoming.delete(addr);
    return order;
  }

  /** Claim handed-over memory and free it at once (its contents are no longer needed). */
  restoreFree(addr: number): void {
    const size = this.restore(addr);
    this.#alloc.free(addr / PAGE_SIZE, size / PAGE_SIZE);
    this.arena.release(addr, size);
  }

  /** Handed-over regions not yet restored. */
  get unclaimed(): ReadonlyArray<Readonly<Region>> {
    return [...this.#incoming.values()];
  }

  /** Free every handed-over region nobody restored (what the kernel leaks until next boot). */
  releaseUnclaimed(): number {
    let n = 0;
    for (const r of [...this.#incoming.values()]) {
      this.restoreFree(r.addr);
      n += r.size;
    }
    return n;
  }

  // ---------------------------------------------------------------------------------------
  // subtrees

  /** Add a subtree: `addr` is an FDT in preserved arena memory. EEXIST name taken; EBUSY finalized. */
  addSubtree(name: string, addr: number): void {
    this.#busyIfFinalized('add subtree');
    if (!NAME_RE.test(name)) throw fail('EINVAL', `subtree name ${JSON.stringify(name)}`);
    if (this.#subtrees.has(name)) throw fail('EEXIST', `subtree "${name}" already added`);
    this.readFdtHeader(addr);
    this.#subtrees.set(name, addr);
  }

  /** Remove a subtree by name or by its address. ENOENT when absent. */
  removeSubtree(nameOrAddr: string | number): void {
    this.#busyIfFinalized('remove subtree');
    for (const [k, v] of this.#subtrees) {
      if (k === nameOrAddr || v === nameOrAddr) {
        this.#subtrees.delete(k);
        return;
      }
    }
    throw fail('ENOENT', `no subtree ${JSON.stringify(nameOrAddr)}`);
  }

  /** In the next image: the address of a handed-over subtree. ENOENT when absent. */
  retrieveSubtree(name: string): number {
    const a = this.#inSubtrees.get(name);
    if (a === undefined) throw fail('ENOENT', `no subtree "${name}" was handed over`);
    return a;
  }

  /**
   * In the next image: check that the handed-over subtree `name` is byte for byte what the
   * previous image finalized (its CRC-32 in the root tree). HandoverError when it is not; a
   * subtree written without a checksum (an older luo) passes.
   */
  verifySubtree(name: string): void {
    const want = this.#inSums.get(name);
    if (want === undefined) return;
    const addr = this.retrieveSubtree(name);
    const got = fdtChecksum(this.view(addr, this.readFdtHeader(addr)));
    if (got !== want) throw new HandoverError(`subtree "${name}" was damaged after the previous image wrote it (CRC-32 ${got.toString(16)}, ${want.toString(16)} at finalize)`);
  }

  /** The handed-over root tree (null on a cold boot). */
  get incomingRoot(): Fdt | null {
    return this.#inRoot;
  }

  /** Write an FDT into fresh preserved pages; returns its address. */
  storeFdt(tree: Fdt | FdtNode): number {
    return new PreservedTree(this).write(tree);
  }

  /** Size of a stored FDT, after checking its header (EINVAL if not an FDT). */
  readFdtHeader(addr: number): number {
    if (!Number.isSafeInteger(addr) || addr <= 0 || addr + 40 > this.arena.size) throw fail('EINVAL', `address ${addr} is not in the arena`);
    try {
      const h = readHeader(this.view(addr, 40), true);
      if (addr + h.totalsize > this.arena.size) throw fail('EINVAL', `FDT at ${addr} runs past the arena`);
      return h.totalsize;
    } catch (e) {
      if (e instanceof FdtError) throw fail('EINVAL', `no valid FDT at ${addr}: ${e.message}`);
      throw e;
    }
  }

  /** Decode the FDT stored at `addr` (a copy; the arena memory is not aliased). */
  readFdt(addr: number): Fdt {
    const size = this.readFdtHeader(addr);
    return decode(this.view(addr, size));
  }

  // ---------------------------------------------------------------------------------------
  // finalize / abort

  get finalized(): boolean {
    return this.#root !== null;
  }

  /** Build the root tree. EOPNOTSUPP disabled, EEXIST finalized, EINVAL a subtree outside preserved memory. */
  finalize(): void {
    if (!this.enabled) throw fail('EOPNOTSUPP', 'KHO is disabled');
    if (this.#root) throw fail('EEXIST', 'KHO is already finalized');
    const root = new FdtNode('');
    root.setString('compatible', KHO_COMPATIBLE);
    root.setU64('arena-size', this.arena.size);
    const regions = [...this.#preserved.values()].sort((a, b) => a.addr - b.addr);
    root.setU64Array('preserved-memory-map', regions.flatMap((r) => [r.addr, r.size]));
    for (const [name, addr] of this.#subtrees) {
      const size = this.readFdtHeader(addr);
      const inside = regions.some((r) => addr >= r.addr && addr + size <= r.addr + r.size);
      if (!inside) throw fail('EINVAL', `subtree "${name}" at ${addr} is not inside preserved memory`);
      root.addChild(name).setU64('fdt', addr).setCells('checksum', [fdtChecksum(this.view(addr, size))]);
    }
    const blob = encode(root);
    const addr = this.alloc(blob.length);
    this.view(addr, blob.length).set(blob);
    this.#root = { addr, size: blob.length };
    this.#writeDebug('out', new Fdt(root), this.#subtrees);
  }

  /** Undo finalize. ENOENT if not finalized; EOPNOTSUPP disabled. Preservations stay. */
  abort(): void {
    if (!this.enabled) throw fail('EOPNOTSUPP', 'KHO is disabled');
    if (!this.#root) throw fail('ENOENT', 'KHO is not finalized');
    this.free(this.#root.addr, this.#root.size);
    this.#root = null;
    if (this.debugDir) fs.rmSync(path.join(this.debugDir, 'out'), { recursive: true, force: true });
  }

  /** The LUO_HANDOVER value for the next image; EINVAL unless finalized. */
  handover(): string {
    if (!this.#root) throw fail('EINVAL', 'KHO is not finalized: nothing to hand over');
    return formatKhoEntry({ arenaFd: this.arena.fd, rootAddr: this.#root.addr, rootSize: this.#root.size });
  }

  #writeDebug(dir: 'in' | 'out', root: Fdt, subtrees: Map<string, number>): void {
    if (!this.debugDir) return;
    try {
      const base = path.join(this.debugDir, dir);
      fs.rmSync(base, { recursive: true, force: true });
      fs.mkdirSync(path.join(base, 'sub_fdts'), { recursive: true, mode: 0o700 });
      fs.writeFileSync(path.join(base, 'fdt'), encode(root), { mode: 0o600 });
      for (const [name, addr] of subtrees) {
        const size = this.readFdtHeader(addr);
        fs.writeFileSync(path.join(base, 'sub_fdts', name), this.view(addr, size), { mode: 0o600 });
      }
    } catch (e) {
      // The debug view must never break an update: report and go on.
      process.emitWarning(`luo: could not write the KHO debug view: ${(e as Error).message}`);
    }
  }
}

