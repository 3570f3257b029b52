/*
 * handlers/fd: preserve any file descriptor as it is ("fd-v1"): a pipe, a FIFO, a regular
 * file, a device, a socket luo has no richer handler for. The open file description itself
 * crosses the exec (same offset, same flags), nothing is serialized.
 *
 * Lifecycle: preserve → attach() dups the fd (luo's own reference, close-on-exec), so the
 * caller may close theirs → at FREEZE the dup is the fd carried to the next image (the
 * token's fd #0; the payload is 0) → retrieve returns that fd number (close-on-exec set) →
 * the new owner closes it. Unpreserve, or FINISH without a restore, closes the dup. A number
 * that is not an open fd is EBADF at preserve. fd-v1 (luo 0.1, whose payload was the fd's
 * number) is read too.
 */
import { fail } from '../errors.js';
import type { FileHandler } from '../luo/file-handler.js';
import * as sys from '../sys/index.js';

/** An fd to preserve: a bare number, or { fd } for clarity at call sites. */
export type FdFile = number | { fd: number };

const fdOf = (f: unknown): number | undefined =>
  typeof f === 'number' ? f : f && typeof f === 'object' && typeof (f as { fd?: unknown }).fd === 'number' && Object.keys(f).length === 1 ? (f as { fd: number }).fd : undefined;

export const fdHandler: FileHandler<number> = {
  compatible: 'fd-v2',
  reads: ['fd-v1'],
  fallback: true,
  canPreserve(file) {
    const fd = fdOf(file);
    return fd !== undefined && Number.isInteger(fd) && fd >= 0;
  },
  attach(file) {
    const fd = fdOf(file)!;
    try {
      return sys.dup(fd);
    } catch {
      throw fail('EBADF', `fd ${fd} is not open`);
    }
  },
  detach(dup) {
    try {
      sys.close(dup);
    } catch { /* already closed */ }
  },
  snapshot: ({ file }) => ({ data: 0n, fds: [file] }),
  retrieve: ({ fd }) => fd(0),
};
