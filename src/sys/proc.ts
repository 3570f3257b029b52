/*
 * sys/proc: other processes and this one's memory as the kernel reports them: pidfds (a
 * process's exit as a readable fd), a process's scheduling state and CPU time, advisory file
 * locks, and
 * /proc/self/pagemap (which pages of a private mapping this process has written).
 *
 * Lifecycle: pidfdOpen() returns a close-on-exec fd the caller owns (poll it: readable once
 * the process has exited; close it with sys.close); ESRCH for a process that is gone.
 * lockFile() returns an fd holding an exclusive flock until it is closed (or the holder
 * exits); EWOULDBLOCK (as EAGAIN) when another holds it. Every failure is a SysError.
 */
import fs from 'node:fs';
import { SysError } from '../errors.js';
import { koffiLib } from './ffi.js';

type Fn = (...a: unknown[]) => unknown;
let lib: { syscall: Fn; flock: Fn } | undefined;

function proc(): { syscall: Fn; flock: Fn } {
  if (lib) return lib;
  const { so } = koffiLib();
  lib = { syscall: so.func('long syscall(long number, ...)'), flock: so.func('int flock(int fd, int op)') };
  return lib;
}

const errno = (): number => koffiLib().koffi.errno();
const O_CLOEXEC = 0o2000000;
const SYS_PIDFD_OPEN = 434; // the same on x86-64 and arm64

/** A pidfd for `pid` (Linux ≥ 5.3): readable once the process has exited. */
export function pidfdOpen(pid: number): number {
  const fd = Number(proc().syscall(SYS_PIDFD_OPEN, 'int', pid, 'unsigned int', 0) as number | bigint);
  if (fd < 0) throw new SysError('pidfd_open', errno(), `pid ${pid}`);
  return fd;
}

/** A process's state letter from /proc/<pid>/stat (R, S, D, T stopped, t traced, Z zombie, X
 *  dead), or null when it is gone. */
export function processState(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) || null;
  } catch {
    return null;
  }
}

/** The CPU time (ns) a process's main thread (or the thread `pid` names) has run, from
 *  /proc/<pid>/schedstat (its first field), or null when it is gone. */
export function processCpuNs(pid: number): number | null {
  try {
    const ns = Number(fs.readFileSync(`/proc/${pid}/schedstat`, 'latin1').split(' ', 1)[0]);
    return Number.isFinite(ns) ? ns : null;
  } catch {
    return null;
  }
}

const LOCK_EX = 2;
const LOCK_NB = 4;

/** Open `path` (created 0600) and take an exclusive flock on it without waiting: the fd, or
 *  SysError EAGAIN (EWOULDBLOCK) when another process holds it. */
export function lockFile(path: string): number {
  const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT | O_CLOEXEC, 0o600);
  if ((proc().flock(fd, LOCK_EX | LOCK_NB) as number) < 0) {
    const e = errno();
    fs.closeSync(fd);
    throw new SysError('flock', e, path);
  }
  return fd;
}

const PAGE = 4096;
// pagemap: bits 63 (present), 61 (file page or shared anonymous) and 56 (mapped exclusively), as bits
// 31, 29 and 24 of an entry's high 32-bit word.
const PRESENT = 1 << 31;
const FILE_OR_SHARED = 1 << 29;
const EXCLUSIVE = 1 << 24;
// Signed, as `&` makes its result: compared as they are.
const HIGH_MASK = PRESENT | FILE_OR_SHARED | EXCLUSIVE;
const HIGH_WRITTEN = PRESENT | EXCLUSIVE;

/**
 * The pages of [addr, addr + len) that this process has written in a private mapping: present,
 * not a file page (a write copied it), and mapped exclusively (the shared zero page that a
 * read of anonymous memory maps is not). Ranges [offset from addr, length], merged.
 * The pagemap is opened for the scan and closed after it: a commit runs once per update, and an
 * fd kept open would be one more in every image after the first.
 */
export function writtenPages(addr: bigint, len: number): Array<[number, number]> {
  const pagemapFd = fs.openSync('/proc/self/pagemap', fs.constants.O_RDONLY | O_CLOEXEC);
  try {
    return scanPagemap(pagemapFd, addr, len);
  } finally {
    fs.closeSync(pagemapFd);
  }
}

function scanPagemap(pagemapFd: number, addr: bigint, len: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const first = Number(addr / BigInt(PAGE));
  const pages = Math.ceil(len / PAGE);
  const CHUNK = 1 << 16; // 64 Ki pages (256 MiB) per read: 512 KiB of entries
  const words = new Uint32Array(2 * Math.min(CHUNK, pages));
  const bytes = new Uint8Array(words.buffer);
  let run = -1;
  for (let p = 0; p < pages; p += CHUNK) {
    const n = Math.min(CHUNK, pages - p);
    const got = fs.readSync(pagemapFd, bytes, 0, n * 8, (first + p) * 8);
    if (got !== n * 8) throw new SysError('pread', 5, `/proc/self/pagemap: ${got} of ${n * 8} bytes`);
    // The flags are all in each entry's high word (the host is little-endian): no BigInt
    // arithmetic per page (262 144 of them for 1 GiB).
    for (let i = 0; i < n; i++) {
      const written = (words[2 * i + 1]! & HIGH_MASK) === HIGH_WRITTEN;
      if (written) {
        if (run < 0) run = p + i;
      } else if (run >= 0) {
        out.push([run * PAGE, (p + i - run) * PAGE]);
        run = -1;
      }
    }
  }
  if (run >= 0) out.push([run * PAGE, (pages - run) * PAGE]);
  return out;
}
