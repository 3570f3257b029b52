/*
 * kho/arena: the process's "physical memory": one sparse memfd mapped MAP_SHARED. An address
 * is a byte offset in it; pages are 4 KiB.
 *
 * Lifecycle: create() on a cold boot (new memfd, ftruncate to its virtual size, map it), or
 * adopt() on a boot after an update (the memfd inherited across exec, checked to really be a
 * luo arena, mapped again: the same bytes appear at the same addresses, nothing is copied).
 * The arena lives until the process exits or execs; it is never unmapped, so views from it
 * stay valid (a successor may map it before its handover, and discard() that mapping if the
 * handover names another arena). release() punches holes: the pages' memory returns to the
 * system and they read as zeros. A failure while creating closes what was opened and raises
 * SysError.
 *
 * Copy-on-write until commit (adopt with `private`): an image that may still be rolled back
 * maps the arena MAP_PRIVATE, so that the previous version, which may resume, keeps the arena
 * exactly as it was at the freeze. Its writes stay in its own pages; release() only zeroes its
 * view and remembers the range. commit() (at FINISH) punches the remembered ranges, writes
 * the pages this image wrote back into the memfd, and maps it shared at the same addresses:
 * views made before stay valid. If the image dies before, its writes die with it.
 */
import { fail } from '../errors.js';
import * as sys from '../sys/index.js';
import { PAGE_SIZE } from './alloc.js';

export const ARENA_NAME = 'luo-arena';
/** Room left after the last preserved region when a successor views the arena ahead. */
const PIN_SLACK = 64 * 2 ** 20;

export class Arena {
  readonly fd: number;
  readonly size: number;
  readonly #map: sys.Mapping;
  /** Private: ranges released since the adoption, punched at commit. */
  #deferred: Array<[number, number]> = [];

  private constructor(fd: number, size: number, map: sys.Mapping) {
    this.fd = fd;
    this.size = size;
    this.#map = map;
  }

  static create(size: number): Arena {
    if (!Number.isSafeInteger(size) || size < 2 * PAGE_SIZE || size % PAGE_SIZE !== 0) {
      throw fail('EINVAL', `arena size ${size} must be a multiple of ${PAGE_SIZE} and at least two pages`);
    }
    const fd = sys.memfdCreate(ARENA_NAME, sys.MFD_CLOEXEC);
    try {
      sys.ftruncate(fd, size);
      return new Arena(fd, size, Arena.#mapArena(fd, size));
    } catch (e) {
      sys.close(fd);
      throw e;
    }
  }

  /** Adopt an inherited arena fd (copy-on-write with `private`). Raises EINVAL when the fd is
   *  not a luo arena. */
  static adopt(fd: number, opts: { private?: boolean } = {}): Arena {
    sys.getFdFlags(fd); // EBADF when the fd is not open
    const target = sys.fdTarget(fd);
    if (!target.startsWith(`/memfd:${ARENA_NAME}`)) throw fail('EINVAL', `fd ${fd} is ${target}, not a luo arena memfd`);
    const st = sys.fstat(fd);
    if (st.size < 2 * PAGE_SIZE || st.size % PAGE_SIZE !== 0) throw fail('EINVAL', `arena fd ${fd} has size ${st.size}`);
    sys.setCloexec(fd, true);
    return new Arena(fd, st.size, Arena.#mapArena(fd, st.size, opts.private ?? false));
  }

  static #mapArena(fd: number, size: number, priv = false): sys.Mapping {
    const m = sys.Mapping.map(fd, size, 0, { private: priv });
    if (!priv) m.adviseHugePages(); // a no-op where shmem THP is off
    return m;
  }

  /** Copy-on-write: this image's writes are its own until commit(). */
  get isPrivate(): boolean {
    return this.#map.isPrivate;
  }

  /**
   * Make this image's arena the arena (FINISH): punch what it released, write back every page
   * it wrote among `inUse` ([address, size] ranges: what is allocated), then map the memfd
   * shared at the same addresses. The bytes written back; 0 when not private.
   */
  commit(inUse: Array<[number, number]>): number {
    if (!this.#map.isPrivate) return 0;
    for (const [addr, len] of mergeRanges(this.#deferred)) sys.punchHole(this.fd, addr, len);
    this.#deferred = [];
    const bytes = this.#map.commitTo(this.fd, inUse);
    this.#map.adviseHugePages();
    return bytes;
  }

  /**
   * Successor, before the handover: view the arena ahead, given the regions the previous image
   * preserved so far (a hint: regions outside the arena are skipped), so that V8's one-time
   * cost for it is paid while the previous image still serves. Returns the bytes viewed.
   */
  pin(regions: Array<[number, number]>): number {
    // One view over everything in use, from the start of the arena to the end of the last
    // region, plus room for what the previous image allocates at its freeze (trees, tables;
    // first fit puts them low): views of the handed-over memory are then slices, and no view
    // made in the pause adds to what V8 counts.
    let end = 0;
    for (const [addr, size] of regions) {
      if (addr % PAGE_SIZE !== 0 || size <= 0 || addr + size > this.size) continue;
      end = Math.max(end, addr + size);
    }
    const len = Math.min(this.size, Math.ceil((end + PIN_SLACK) / PAGE_SIZE) * PAGE_SIZE);
    this.#map.pin(0, len);
    return len;
  }

  /** Give up a mapping made ahead that the handover did not use (its views then read zeros). */
  discard(): void {
    this.#map.unmap();
  }

  /** Zero-copy view of [addr, addr+len). EFAULT outside the arena. */
  view(addr: number, len: number): Uint8Array {
    return this.#map.bytes(addr, len);
  }

  /** Give pages' memory back to the system; they read as zeros afterwards. Private: this
   *  image's view reads zeros now, the memfd is punched at commit(). */
  release(addr: number, len: number): void {
    if (len <= 0) return;
    if (this.#map.isPrivate) {
      this.#map.zero(addr, len);
      this.#deferred.push([addr, len]);
      return;
    }
    sys.punchHole(this.fd, addr, len);
  }

  /** Bytes of memory the arena holds right now (the memfd's allocated blocks). */
  allocatedBytes(): number {
    return sys.fstat(this.fd).allocated;
  }
}

/** Sorted, merged [start, length] ranges. */
function mergeRanges(rs: Array<[number, number]>): Array<[number, number]> {
  const sorted = [...rs].sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const [a, n] of sorted) {
    const last = out.at(-1);
    if (last && a <= last[0] + last[1]) last[1] = Math.max(last[1], a + n - last[0]);
    else out.push([a, n]);
  }
  return out;
}
