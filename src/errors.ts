/*
 * errors: every error luo raises, declared in one place.
 *
 * Lifecycle: these are values, not state. An operation that fails raises one of the classes
 * below and leaves its object as it was before the call (unless the operation's own comment
 * says otherwise). Codes are stable: user code and the control protocol match on `code`
 * (and `errno`), never on the message text.
 *
 *  - LuoError      a kernel-style failure: `code` is the errno name (EINVAL, EBUSY, ...),
 *                  `errno` its Linux number. This is what LUO/KHO verbs raise, and what the
 *                  control device turns into a negative errno on the wire.
 *  - SysError      a libc call failed: as LuoError, plus `syscall` naming the call.
 *  - FdtError      a device-tree blob is malformed: code ERR_FDT, `offset` in the blob.
 *  - HandoverError the handover given to this image is corrupt or incompatible: code
 *                  ERR_HANDOVER. At boot this is fatal (the kernel panics here) unless the
 *                  caller asked to boot cold.
 */
import { constants } from 'node:os';

const ERRNO = constants.errno as Record<string, number>;
const ERRNO_NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(ERRNO)) {
  if (!ERRNO_NAMES.has(value)) ERRNO_NAMES.set(value, name);
}

/** The errno names luo raises itself (libc failures may carry any other). */
export type ErrnoName =
  | 'EPERM' | 'ENOENT' | 'EINTR' | 'EIO' | 'E2BIG' | 'EBADF' | 'EAGAIN' | 'ENOMEM'
  | 'EACCES' | 'EFAULT' | 'EBUSY' | 'EEXIST' | 'EINVAL' | 'EMFILE' | 'ENOSPC'
  | 'ENOTTY' | 'ERANGE' | 'ENODATA' | 'EOVERFLOW' | 'EOPNOTSUPP' | 'ETIMEDOUT'
  | 'ECANCELED' | 'ENOTSUP' | 'EPROTO' | 'EBADMSG' | 'ENOEXEC' | 'ENAMETOOLONG' | 'ECHILD' | 'EPIPE' | 'ECONNREFUSED';

/** Linux errno number for a name (EINVAL → 22). */
export function errnoOf(name: string): number {
  const n = ERRNO[name];
  if (n === undefined) throw new TypeError(`unknown errno name ${name}`);
  return n;
}

/** Errno name for a Linux number (22 → EINVAL); `E<number>` when unknown. */
export function errnoName(n: number): string {
  return ERRNO_NAMES.get(n) ?? `E${n}`;
}

/** luo's own codes, for failures that have no errno. */
export const LUO_CODES = {
  ERR_FDT: 'a flattened device tree blob is malformed',
  ERR_HANDOVER: 'the handover from the previous image is corrupt or incompatible',
  ERR_DTS: 'a tree cannot be written as DTS source',
  ERR_NO_SERVICE: 'no service is running there (nothing listens at its device, or its process is gone)',
  ERR_UPDATE_FAILED: 'the update failed and was cancelled or rolled back: the previous version serves',
  ERR_USAGE: 'the command line is wrong',
} as const;
export type LuoCode = keyof typeof LUO_CODES;

export class LuoError extends Error {
  /** errno name (EINVAL…) or one of LUO_CODES. */
  readonly code: string;
  /** Linux errno number; 0 for luo's own codes. */
  readonly errno: number;

  constructor(code: ErrnoName | LuoCode | string, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = new.target.name;
    this.code = code;
    this.errno = code in LUO_CODES ? 0 : (ERRNO[code] ?? 0);
  }
}

/** A service took the connection and answered nothing within the time asked (ETIMEDOUT). */
export class NoAnswerError extends LuoError {
  constructor(message: string) {
    super('ETIMEDOUT', message);
  }
}

export class SysError extends LuoError {
  readonly syscall: string;
  constructor(syscall: string, errno: number, detail?: string) {
    const name = errnoName(errno);
    super(name, `${syscall}${detail ? `(${detail})` : ''} failed`);
    this.syscall = syscall;
  }
}

export class FdtError extends LuoError {
  /** Byte offset in the blob where the problem was found. */
  readonly offset: number;
  constructor(offset: number, message: string) {
    super('ERR_FDT', `at offset ${offset}: ${message}`);
    this.offset = offset;
  }
}

export class HandoverError extends LuoError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_HANDOVER', message, options);
  }
}

/** Raise a kernel-style error: `throw fail('EINVAL', 'address not page-aligned')`. */
export function fail(code: ErrnoName, message: string): LuoError {
  return new LuoError(code, message);
}
