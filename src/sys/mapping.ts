/*
 * sys/mapping: shared mappings of a file, with views that can never outlive the memory.
 *
 * Lifecycle: map() → pin() large ranges ahead (optional) → bytes() views (zero-copy
 * Uint8Arrays) → unmap().
 *
 * The hazard: a JS view over memory that has been munmap()ed kills the process with SIGSEGV
 * when read, and koffi's external ArrayBuffers cannot be detached (structuredClone copies
 * them instead). So unmap() never leaves a hole in the address space: it atomically replaces
 * the range with private anonymous zero pages (mmap MAP_FIXED), dropping the file's pages.
 * A view kept past unmap() reads zeros and writes to private memory; it cannot fault and
 * cannot reach another mapping, because the range stays reserved until exec or exit. After
 * unmap() the Mapping refuses new views with EBADF.
 *
 * Views are limited to 4 GiB each (Node 20's largest ArrayBuffer; koffi aborts the process
 * above it), so a larger mapping is reached through several views.
 *
 * Copy-on-write (map with `private`): the file shows through until a page is written; a write
 * copies that page into this process only. zero() replaces a range with anonymous zero pages
 * (the file is not touched). commitTo(fd) writes every page this process wrote back into the
 * file (found in /proc/self/pagemap), then maps the file shared over the same addresses: views
 * made before stay valid and now see the file. Views never move.
 */
import { fail } from '../errors.js';
import {
  MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE,
  madviseRaw, mmapRaw, pwriteRaw, viewRaw,
} from './libc.js';
import { writtenPages } from './proc.js';

/** Largest single view (bytes). */
export const MAX_VIEW = 2 ** 32;
// Views come from cached windows. V8 counts every ArrayBuffer's length as external memory and
// runs a full GC when that grows fast (measured: ~5 ms per 1 GiB view), so windows are small
// and made once; a view larger than a window gets its own buffer (and its one-time GC cost).
const WINDOW = 32 * 2 ** 20;

export class Mapping {
  readonly length: number;
  #addr: bigint;
  #live = true;
  #windows = new Map<number, ArrayBuffer>();
  /** Large views made ahead (pin()): later views inside one are slices of it. */
  #pins: Array<{ start: number; end: number; ab: ArrayBuffer }> = [];
  #private: boolean;

  private constructor(addr: bigint, length: number, priv: boolean) {
    this.#addr = addr;
    this.length = length;
    this.#private = priv;
  }

  /** Map `length` bytes of `fd` from `offset`, read-write, without reserving swap: shared, or
   *  copy-on-write with `private`. */
  static map(fd: number, length: number, offset = 0, opts: { private?: boolean } = {}): Mapping {
    if (!Number.isSafeInteger(length) || length <= 0) throw fail('EINVAL', `mapping length ${length}`);
    const flags = (opts.private ? MAP_PRIVATE : MAP_SHARED) | MAP_NORESERVE;
    const addr = mmapRaw(null, length, PROT_READ | PROT_WRITE, flags, fd, offset);
    return new Mapping(addr, length, opts.private ?? false);
  }

  /** Copy-on-write: writes stay in this process until commitTo(). */
  /** Where it is mapped in this process. */
  get address(): bigint {
    return this.#addr;
  }

  get isPrivate(): boolean {
    return this.#private;
  }

  #check(offset: number, length: number): void {
    if (!this.#live) throw fail('EBADF', 'mapping was unmapped');
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.length) {
      throw fail('EFAULT', `range [${offset}, +${length}) outside mapping of ${this.length} bytes`);
    }
  }

  /** Private mappings: replace [offset, +length) with anonymous zero pages (what a hole punch
   *  shows), leaving the file alone. Page-aligned. */
  zero(offset: number, length: number): void {
    this.#check(offset, length);
    if (!this.#private) throw fail('EINVAL', 'zero() is for private mappings (a shared one punches the file)');
    if (length === 0) return;
    mmapRaw(this.#addr + BigInt(offset), length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
  }

  /**
   * Private mappings: write every page this process wrote in `ranges` ([offset, length]) back
   * into `fd` at the same offsets, then map `fd` shared over the whole mapping, at the same
   * address. Returns the bytes written back. Afterwards the mapping is shared.
   */
  commitTo(fd: number, ranges: Array<[number, number]>): number {
    if (!this.#live) throw fail('EBADF', 'mapping was unmapped');
    if (!this.#private) return 0;
    let bytes = 0;
    for (const [off, len] of ranges) {
      this.#check(off, len);
      for (const [o, n] of writtenPages(this.#addr + BigInt(off), len)) {
        pwriteRaw(fd, this.#addr + BigInt(off + o), n, off + o);
        bytes += n;
      }
    }
    mmapRaw(this.#addr, this.length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE, fd, 0);
    this.#private = false;
    return bytes;
  }

  /**
   * Ask for transparent huge pages (madvise MADV_HUGEPAGE). Where shmem THP is enabled
   * ("advise" or "always" in /sys/kernel/mm/transparent_hugepage/shmem_enabled) this cuts page
   * faults and the exec-time teardown of the mapping ~512-fold. Returns false where the kernel
   * refuses; never throws for that.
   */
  adviseHugePages(): boolean {
    if (!this.#live) throw fail('EBADF', 'mapping was unmapped');
    try {
      madviseRaw(this.#addr, this.length, MADV_HUGEPAGE);
      return true;
    } catch {
      return false;
    }
  }

  get mapped(): boolean {
    return this.#live;
  }

  /**
   * A zero-copy view of [offset, offset + length). Writes go to the file. Free inside a
   * pinned range; cheap when the range fits in one 32 MiB window (cached); larger views cost
   * V8 a GC when made.
   */
  bytes(offset: number, length: number): Uint8Array {
    if (!this.#live) throw fail('EBADF', 'mapping was unmapped; its views are gone');
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.length) {
      throw fail('EFAULT', `range [${offset}, +${length}) outside mapping of ${this.length} bytes`);
    }
    if (length > MAX_VIEW) throw fail('E2BIG', `a single view is limited to ${MAX_VIEW} bytes (asked ${length})`);
    for (const p of this.#pins) if (offset >= p.start && offset + length <= p.end) return new Uint8Array(p.ab, offset - p.start, length);
    const w = Math.floor(offset / WINDOW);
    const inWindow = offset - w * WINDOW;
    if (inWindow + length <= WINDOW) {
      let ab = this.#windows.get(w);
      if (!ab) {
        const wlen = Math.min(WINDOW, this.length - w * WINDOW);
        ab = viewRaw(this.#addr + BigInt(w * WINDOW), wlen);
        this.#windows.set(w, ab);
      }
      return new Uint8Array(ab, inWindow, length);
    }
    return new Uint8Array(viewRaw(this.#addr + BigInt(offset), length));
  }

  /**
   * Make the views of a range now, so that what V8 does for external buffers (it counts their
   * bytes, and collects when they grow: a full collection, ~5 ms per GiB) happens now rather
   * than when the range is used: every later view inside it, of any size, is a slice, free,
   * and adds nothing to V8's count. For a successor, which maps the arena before its handover.
   * Pieces are at most MAX_VIEW; a range already covered is skipped. Idempotent.
   */
  pin(offset: number, length: number): void {
    this.#check(offset, length);
    for (let o = offset; o < offset + length; o += MAX_VIEW) {
      const len = Math.min(MAX_VIEW, offset + length - o);
      if (len <= 0 || this.#pins.some((p) => o >= p.start && o + len <= p.end)) continue;
      this.#pins.push({ start: o, end: o + len, ab: viewRaw(this.#addr + BigInt(o), len) });
    }
  }

  /** Bytes covered by pin(). */
  get pinnedBytes(): number {
    return this.#pins.reduce((n, p) => n + p.end - p.start, 0);
  }

  /**
   * Drop the file's pages from this address range. Existing views then see zero pages
   * (never a fault); new views are refused. Idempotent.
   */
  unmap(): void {
    if (!this.#live) return;
    mmapRaw(this.#addr, this.length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    this.#live = false;
    this.#windows.clear();
    this.#pins = [];
  }
}
