/*
 * handlers/memfd: memfds across an update ("memfd-v1", reference §7), and luo's Memfd object.
 *
 * Lifecycle of a preserved memfd:
 *   preserve   luo keeps its own reference (a dup); a raw memfd fd is wrapped in a Memfd.
 *   PREPARE    the mapping is frozen (the kernel's SHMEM_F_MAPPING_FROZEN): through luo's
 *              Memfd, any size change (even to the same size), a write reaching past the end,
 *              and any fallocate or hole punch fail with EPERM. Reads, in-bounds writes and
 *              existing mappings keep working.
 *   CANCEL     unfrozen: everything works again.
 *   exec       the same open file crosses: contents, size and position survive, nothing is
 *              copied, so restoring 1 GiB costs the same as restoring 1 byte.
 *   retrieve   a Memfd on the carried fd (close-on-exec), with an optional zero-copy view().
 *
 * Unlike the kernel's memfd-v1, which recreates the file, luo hands over the same file: its
 * name and seals survive too. The frozen flag does not (it is luo's, not the kernel's).
 */
import fs from 'node:fs';
import { fail } from '../errors.js';
import type { FileHandler } from '../luo/file-handler.js';
import * as sys from '../sys/index.js';

export class Memfd {
  readonly fd: number;
  #frozen = false;
  #map: sys.Mapping | null = null;
  #closed = false;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /** A new memfd (close-on-exec) of `size` bytes (sparse). */
  static create(name: string, size = 0): Memfd {
    const fd = sys.memfdCreate(name, sys.MFD_CLOEXEC | sys.MFD_ALLOW_SEALING);
    if (size > 0) sys.ftruncate(fd, size);
    return new Memfd(fd);
  }

  /** Wrap an existing memfd fd (EINVAL if it is not a memfd). The Memfd owns it from now on. */
  static from(fd: number): Memfd {
    if (!isMemfd(fd)) throw fail('EINVAL', `fd ${fd} is not a memfd`);
    return new Memfd(fd);
  }

  get frozen(): boolean {
    return this.#frozen;
  }

  /** Set by the memfd handler from PREPARE until CANCEL. */
  setFrozen(on: boolean): void {
    this.#frozen = on;
  }

  #open(): void {
    if (this.#closed) throw fail('EBADF', 'memfd is closed');
  }

  #refuse(what: string): void {
    if (this.#frozen) throw fail('EPERM', `${what}: the memfd is preserved for a live update (frozen from PREPARE until CANCEL)`);
  }

  get size(): number {
    this.#open();
    return sys.fstat(this.fd).size;
  }

  truncate(size: number): void {
    this.#open();
    this.#refuse('size change');
    sys.ftruncate(this.fd, size);
  }

  allocate(offset: number, length: number): void {
    this.#open();
    this.#refuse('fallocate');
    sys.fallocate(this.fd, 0, offset, length);
  }

  punchHole(offset: number, length: number): void {
    this.#open();
    this.#refuse('hole punch');
    sys.punchHole(this.fd, offset, length);
  }

  /** pwrite; EPERM while frozen if it would reach past the end. */
  write(data: Uint8Array, position: number): number {
    this.#open();
    if (this.#frozen && position + data.length > this.size) this.#refuse('write past the end');
    return writeSyncAt(this.fd, data, position);
  }

  /** pread. */
  read(into: Uint8Array, position: number): number {
    this.#open();
    return readSyncAt(this.fd, into, position);
  }

  /** A zero-copy view of [offset, offset+length) (the file is mapped shared on first use). */
  view(offset = 0, length?: number): Uint8Array {
    this.#open();
    const size = this.size;
    if (!this.#map || this.#map.length < size) {
      this.#map?.unmap();
      this.#map = size > 0 ? sys.Mapping.map(this.fd, size) : null;
    }
    const len = length ?? size - offset;
    if (!this.#map) throw fail('EFAULT', 'an empty memfd has nothing to view');
    return this.#map.bytes(offset, len);
  }

  close(): void {
    if (this.#closed) return;
    this.#map?.unmap();
    this.#map = null;
    sys.close(this.fd);
    this.#closed = true;
  }
}

function writeSyncAt(fd: number, data: Uint8Array, position: number): number {
  return fs.writeSync(fd, data, 0, data.length, position);
}
function readSyncAt(fd: number, into: Uint8Array, position: number): number {
  return fs.readSync(fd, into, 0, into.length, position);
}

export function isMemfd(fd: number): boolean {
  try {
    return sys.fdTarget(fd).startsWith('/memfd:');
  } catch {
    return false;
  }
}

interface Held { memfd: Memfd; own: boolean }

export const memfdHandler: FileHandler<Held> = {
  compatible: 'memfd-v1',
  canPreserve: (f) => f instanceof Memfd || (typeof f === 'number' && isMemfd(f)),
  attach(file) {
    // luo's own reference, so the caller may close theirs (the kernel's fget).
    if (file instanceof Memfd) return { memfd: file, own: false };
    return { memfd: Memfd.from(sys.dup(file as number)), own: true };
  },
  detach(h) {
    h.memfd.setFrozen(false);
    if (h.own) h.memfd.close();
  },
  prepare({ file }) {
    file.memfd.setFrozen(true);
    return BigInt(file.memfd.size);
  },
  cancel({ file }) {
    file.memfd.setFrozen(false);
  },
  snapshot: ({ file }) => ({ fds: [file.memfd.fd] }),
  retrieve({ data, fd }) {
    const m = Memfd.from(fd(0));
    if (BigInt(m.size) !== data) throw fail('EIO', `memfd is ${m.size} bytes, ${data} were handed over`);
    return m;
  },
};
