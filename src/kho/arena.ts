/*
 * kho/arena: the process's "physical memory": one sparse memfd mapped MAP_SHARED. An address
 * is a byte offset in it; pages are 4 KiB.
 *
 * Lifecycle: create() on a cold boot (new memfd, ftruncate to its virtual size, map it), or
 * adopt() on a boot after an update (the memfd inherited across exec, checked to really be a
 * luo arena, mapped again: the same bytes appear at the same addresses, nothing is copied).
 * The arena lives until the process exits or execs; it is never unmapped, so views from it
 * stay valid. release() punches holes: the pages' memory returns to the system and they read
 * as zeros. A failure while creating closes what was opened and raises SysError.
 */
import { fail } from '../errors.js';
import * as sys from '../sys/index.js';
import { PAGE_SIZE } from './alloc.js';

export const ARENA_NAME = 'luo-arena';

export class Arena {
  readonly fd: number;
  readonly size: number;
  readonly #map: sys.Mapping;

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

  /** Adopt an inherited arena fd. Raises EINVAL when the fd is not a luo arena. */
  static adopt(fd: number): Arena {
    sys.getFdFlags(fd); // EBADF when the fd is not open
    const target = sys.fdTarget(fd);
    if (!target.startsWith(`/memfd:${ARENA_NAME}`)) throw fail('EINVAL', `fd ${fd} is ${target}, not a luo arena memfd`);
    const st = sys.fstat(fd);
    if (st.size < 2 * PAGE_SIZE || st.size % PAGE_SIZE !== 0) throw fail('EINVAL', `arena fd ${fd} has size ${st.size}`);
    sys.setCloexec(fd, true);
    return new Arena(fd, st.size, Arena.#mapArena(fd, st.size));
  }

  static #mapArena(fd: number, size: number): sys.Mapping {
    const m = sys.Mapping.map(fd, size);
    m.adviseHugePages(); // a no-op where shmem THP is off
    return m;
  }

  /** Zero-copy view of [addr, addr+len). EFAULT outside the arena. */
  view(addr: number, len: number): Uint8Array {
    return this.#map.bytes(addr, len);
  }

  /** Give pages' memory back to the system; they read as zeros afterwards. */
  release(addr: number, len: number): void {
    sys.punchHole(this.fd, addr, len);
  }

  /** Bytes of memory the arena holds right now (the memfd's allocated blocks). */
  allocatedBytes(): number {
    return sys.fstat(this.fd).allocated;
  }
}
