/*
 * sys/libc: the only module that calls libc (through koffi). Everything else in luo goes
 * through the typed wrappers exported here.
 *
 * Lifecycle: koffi and libc are loaded once, lazily, on the first call (koffi's loader costs
 * ~15 ms: programs that never call libc, like `luo dump`, never pay it). Every wrapper checks the
 * C result; a failure raises SysError carrying the errno name and the call, and has no other
 * effect (no partial state is kept here). Loading fails loudly (the error names koffi and
 * libc) on a platform without glibc's libc.so.6; luo is Linux-only.
 *
 * Raw pointers never leave this directory: mapped memory is reached only through
 * `Mapping` (sys/mapping.ts), which guarantees that no view outlives its mapping.
 */
import fs from 'node:fs';
import os from 'node:os';
import { SysError } from '../errors.js';
import { koffi, koffiLib } from './ffi.js';
import { processCpuNs } from './proc.js';

type Fn = (...args: unknown[]) => unknown;
interface Libc {
  memfd_create: Fn; ftruncate: Fn; fallocate: Fn; mmap: Fn; munmap: Fn; fcntl: Fn;
  dup: Fn; dup3: Fn; close: Fn; execve: Fn; _exit: Fn; waitpid: Fn; getpid: Fn; madvise: Fn; close_range: Fn; sched_setscheduler: Fn;
  getrlimit: Fn; setrlimit: Fn; pwrite: Fn;
  posix_spawn: Fn; fa_init: Fn; fa_destroy: Fn; fa_adddup2: Fn; fa_addchdir: Fn; attr_init: Fn; attr_destroy: Fn; attr_setflags: Fn;
  attr_setsigmask: Fn; attr_setsigdefault: Fn; sigemptyset: Fn; sigfillset: Fn;
}
let lib: Libc | undefined;

function libc(): Libc {
  if (lib) return lib;
  const so = koffiLib().so;
  lib = {
    memfd_create: so.func('int memfd_create(const char *name, unsigned int flags)'),
    ftruncate: so.func('int ftruncate(int fd, int64_t length)'),
    fallocate: so.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)'),
    mmap: so.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
    munmap: so.func('int munmap(void *addr, size_t length)'),
    fcntl: so.func('int fcntl(int fd, int cmd, ...)'),
    dup: so.func('int dup(int fd)'),
    dup3: so.func('int dup3(int oldfd, int newfd, int flags)'),
    close: so.func('int close(int fd)'),
    execve: so.func('int execve(const char *path, const char **argv, const char **envp)'),
    _exit: so.func('void _exit(int status)'),
    waitpid: so.func('int waitpid(int pid, _Out_ int *status, int options)'),
    getpid: so.func('int getpid()'),
    madvise: so.func('int madvise(void *addr, size_t length, int advice)'),
    close_range: so.func('int close_range(unsigned int first, unsigned int last, int flags)'),
    sched_setscheduler: so.func('int sched_setscheduler(int pid, int policy, const int *param)'),
    getrlimit: so.func('int getrlimit(int resource, _Out_ uint64_t *rlim)'),
    setrlimit: so.func('int setrlimit(int resource, const uint64_t *rlim)'),
    pwrite: so.func('intptr_t pwrite(int fd, void *buf, size_t n, int64_t offset)'),
    posix_spawn: so.func('int posix_spawn(_Out_ int *pid, const char *path, void *fa, void *attr, const char **argv, const char **envp)'),
    fa_init: so.func('int posix_spawn_file_actions_init(void *fa)'),
    fa_destroy: so.func('int posix_spawn_file_actions_destroy(void *fa)'),
    fa_adddup2: so.func('int posix_spawn_file_actions_adddup2(void *fa, int fd, int newfd)'),
    fa_addchdir: so.func('int posix_spawn_file_actions_addchdir_np(void *fa, const char *path)'),
    attr_init: so.func('int posix_spawnattr_init(void *attr)'),
    attr_destroy: so.func('int posix_spawnattr_destroy(void *attr)'),
    attr_setflags: so.func('int posix_spawnattr_setflags(void *attr, short flags)'),
    attr_setsigmask: so.func('int posix_spawnattr_setsigmask(void *attr, const void *set)'),
    attr_setsigdefault: so.func('int posix_spawnattr_setsigdefault(void *attr, const void *set)'),
    sigemptyset: so.func('int sigemptyset(void *set)'),
    sigfillset: so.func('int sigfillset(void *set)'),
  };
  return lib;
}

function check(ret: number, syscall: string, detail?: string): number {
  if (ret < 0) throw new SysError(syscall, koffi().errno(), detail);
  return ret;
}

// Linux x86_64/aarch64 constants (asm-generic values are the same on both).
export const MFD_CLOEXEC = 0x1;
export const MFD_ALLOW_SEALING = 0x2;
export const F_DUPFD_CLOEXEC = 1030;
export const F_GETFD = 1;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const FD_CLOEXEC = 1;
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const F_SEAL_WRITE = 0x8;
export const FALLOC_FL_KEEP_SIZE = 0x1;
export const FALLOC_FL_PUNCH_HOLE = 0x2;
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x1;
export const MAP_PRIVATE = 0x2;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const WNOHANG = 1;
export const MADV_HUGEPAGE = 14;

const MAP_FAILED = 0xffffffffffffffffn;

export function memfdCreate(name: string, flags = MFD_CLOEXEC): number {
  return check(libc().memfd_create(name, flags) as number, 'memfd_create', name);
}

export function ftruncate(fd: number, length: number): void {
  check(libc().ftruncate(fd, length) as number, 'ftruncate', `fd ${fd}`);
}

/** fallocate(2); mode 0 allocates, PUNCH_HOLE|KEEP_SIZE releases the range. */
export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  check(libc().fallocate(fd, mode, offset, length) as number, 'fallocate', `fd ${fd}`);
}

/** Release a range of a file's blocks; the size does not change and reads return zeros. */
export function punchHole(fd: number, offset: number, length: number): void {
  if (length > 0) fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

export interface FdStat { size: number; allocated: number; mode: number; ino: number; dev: number }

/** fstat(2), through Node's binding (already a thin wrapper): size, allocated bytes, type. */
export function fstat(fd: number): FdStat {
  try {
    const st = fs.fstatSync(fd);
    return { size: st.size, allocated: st.blocks * 512, mode: st.mode, ino: st.ino, dev: st.dev };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new SysError('fstat', -(err.errno ?? -9), `fd ${fd}`);
  }
}

/** pwrite(2) from raw mapped memory (a whole range: short writes are continued). Only
 *  sys/mapping.ts calls this. */
export function pwriteRaw(fd: number, addr: bigint, length: number, offset: number): void {
  for (let done = 0; done < length;) {
    const n = Number(libc().pwrite(fd, addr + BigInt(done), length - done, offset + done) as number | bigint);
    if (n < 0) {
      const e = koffi().errno();
      if (e === 4) continue; // EINTR
      throw new SysError('pwrite', e, `fd ${fd}, ${length} bytes at ${offset}`);
    }
    done += n;
  }
}

/** Raw mmap; returns the address. Only sys/mapping.ts calls this. */
export function mmapRaw(addr: bigint | null, length: number, prot: number, flags: number, fd: number, offset: number): bigint {
  const p = libc().mmap(addr, length, prot, flags, fd, offset);
  const a = typeof p === 'bigint' ? p : koffi().address(p);
  if (a === MAP_FAILED) throw new SysError('mmap', koffi().errno(), `fd ${fd}, ${length} bytes`);
  return a;
}

/** madvise(2) on a raw range. Only sys/mapping.ts calls this. */
export function madviseRaw(addr: bigint, length: number, advice: number): void {
  check(libc().madvise(addr, length, advice) as number, 'madvise');
}

export function munmapRaw(addr: bigint, length: number): void {
  check(libc().munmap(addr, length) as number, 'munmap');
}

/** A zero-copy ArrayBuffer over mapped memory. Only sys/mapping.ts calls this. */
export function viewRaw(addr: bigint, length: number): ArrayBuffer {
  return koffi().view(addr, length);
}

export function getFdFlags(fd: number): number {
  return check(libc().fcntl(fd, F_GETFD, 'int', 0) as number, 'fcntl(F_GETFD)', `fd ${fd}`);
}

/** True when `fd` is open in this process (fcntl, without opening anything: listing
 *  /proc/self/fd would itself take the lowest free number). */
export function isOpen(fd: number): boolean {
  try {
    getFdFlags(fd);
    return true;
  } catch {
    return false;
  }
}

export function setCloexec(fd: number, on: boolean): void {
  const flags = getFdFlags(fd);
  const next = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
  if (next !== flags) check(libc().fcntl(fd, F_SETFD, 'int', next) as number, 'fcntl(F_SETFD)', `fd ${fd}`);
}

export function isCloexec(fd: number): boolean {
  return (getFdFlags(fd) & FD_CLOEXEC) !== 0;
}

export function getFileStatusFlags(fd: number): number {
  return check(libc().fcntl(fd, F_GETFL, 'int', 0) as number, 'fcntl(F_GETFL)', `fd ${fd}`);
}

export function addSeals(fd: number, seals: number): void {
  check(libc().fcntl(fd, F_ADD_SEALS, 'int', seals) as number, 'fcntl(F_ADD_SEALS)', `fd ${fd}`);
}

export function getSeals(fd: number): number {
  return check(libc().fcntl(fd, F_GET_SEALS, 'int', 0) as number, 'fcntl(F_GET_SEALS)', `fd ${fd}`);
}

/** dup with FD_CLOEXEC set on the copy (fcntl F_DUPFD_CLOEXEC). */
export function dup(fd: number): number {
  return check(libc().fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0) as number, 'dup', `fd ${fd}`);
}

/** dup3(oldfd, newfd, O_CLOEXEC or 0). */
export function dup3(oldfd: number, newfd: number, cloexec: boolean): number {
  return check(libc().dup3(oldfd, newfd, cloexec ? 0o2000000 : 0) as number, 'dup3', `${oldfd} → ${newfd}`);
}

export function close(fd: number): void {
  check(libc().close(fd) as number, 'close', `fd ${fd}`);
}

/**
 * Close many fds at once: each run of consecutive numbers with one close_range(2) (Linux ≥
 * 5.9), one by one where that fails. fds already closed are ignored. Returns how many calls.
 */
export function closeFds(fds: Iterable<number>): number {
  const sorted = [...new Set(fds)].filter((fd) => Number.isInteger(fd) && fd >= 0).sort((a, b) => a - b);
  let calls = 0;
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    calls++;
    if ((libc().close_range(sorted[i], sorted[j], 0) as number) < 0) {
      for (let k = i; k <= j; k++) libc().close(sorted[k]);
    }
    i = j + 1;
  }
  return calls;
}

/** This process's threads (their ids), from /proc/self/task; just the pid where that is missing. */
function threadIds(): number[] {
  try {
    return fs.readdirSync('/proc/self/task').map(Number);
  } catch {
    return [process.pid];
  }
}

/**
 * CPU time (ns) this process's threads other than the main one have run, from
 * /proc/<tid>/schedstat (processCpuNs); 0 where that is missing.
 * Those threads are V8's (compiling, collecting), libuv's and workers'.
 */
export function otherThreadsCpuNs(): number {
  let ns = 0;
  for (const tid of threadIds()) {
    if (tid === process.pid) continue;
    ns += processCpuNs(tid) ?? 0; // null: it exited
  }
  return Number.isFinite(ns) ? ns : 0;
}

/**
 * Set the nice value of every thread of this process. Linux keeps a nice value per thread:
 * setpriority(PRIO_PROCESS, 0) (os.setPriority) changes only the calling one. Threads that
 * refuse (gone, not permitted) are skipped. Returns how many were changed.
 */
export function reniceAllThreads(nice: number): number {
  let n = 0;
  for (const tid of threadIds()) {
    try {
      os.setPriority(tid, nice);
      n++;
    } catch { /* exited, or not permitted */ }
  }
  return n;
}

/** Linux's SCHED_IDLE: run only when a CPU has nothing else to do. */
export const SCHED_IDLE = 5;

/**
 * Put every thread of this process in the SCHED_IDLE class (sched_setscheduler, per thread:
 * Linux schedules threads, not processes). Any thread may lower itself to it without
 * privileges. Returns how many threads were moved; SysError when none could be.
 */
export function idleAllThreads(): number {
  const param = new Int32Array([0]);
  let n = 0;
  let err = 0;
  for (const tid of threadIds()) {
    if ((libc().sched_setscheduler(tid, SCHED_IDLE, param) as number) === 0) n++;
    else err = koffi().errno();
  }
  if (n === 0) throw new SysError('sched_setscheduler', err);
  return n;
}

const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;

export interface SpawnOptions {
  /** The child's argv (argv[0] as given) and environment. */
  argv: string[];
  env: NodeJS.ProcessEnv;
  cwd?: string;
  /** fds the child gets, as [this process's fd, the child's number]; 0-2 are inherited as they are. */
  fds?: Array<[number, number]>;
}

/** The posix_spawn family returns an errno (0: done), and leaves errno alone. */
function code(ret: unknown, call: string, detail?: string): void {
  if (ret !== 0) throw new SysError(call, ret as number, detail);
}

/**
 * Start `file` as a child with posix_spawn(3): glibc runs it with CLONE_VM|CLONE_VFORK, so
 * this process's page tables are neither copied nor torn down again at the child's exec.
 * Node's spawn forks: for a serving image of a few hundred MiB that held the event loop
 * 10-20 ms here (the copy, then the child's exec freeing it), longer the bigger the heap.
 * The child starts with every signal at its default and none blocked (as Node's own spawn
 * leaves it), stdin, stdout and stderr inherited (close-on-exec cleared on them, as Node 20
 * opens them with it), and `fds` at their numbers; nothing else (every other fd of this
 * process is close-on-exec). Its pid; SysError (ENOENT, EACCES, ...) when it cannot be run.
 * Nothing reaps it but waitpid(pid): Node does not know it.
 */
export function spawnProcess(file: string, o: SpawnOptions): number {
  const l = libc();
  const fa = Buffer.alloc(512);
  const attr = Buffer.alloc(1024);
  const set = Buffer.alloc(256);
  code(l.fa_init(fa), 'posix_spawn_file_actions_init');
  try {
    code(l.attr_init(attr), 'posix_spawnattr_init');
    try {
      // dup2 onto itself clears close-on-exec (glibc 2.29+).
      for (const fd of [0, 1, 2]) code(l.fa_adddup2(fa, fd, fd), 'posix_spawn_file_actions_adddup2', `fd ${fd}`);
      for (const [from, to] of o.fds ?? []) code(l.fa_adddup2(fa, from, to), 'posix_spawn_file_actions_adddup2', `fd ${from} as ${to}`);
      if (o.cwd) code(l.fa_addchdir(fa, o.cwd), 'posix_spawn_file_actions_addchdir_np', o.cwd);
      l.sigfillset(set);
      code(l.attr_setsigdefault(attr, set), 'posix_spawnattr_setsigdefault');
      l.sigemptyset(set);
      code(l.attr_setsigmask(attr, set), 'posix_spawnattr_setsigmask');
      code(l.attr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK), 'posix_spawnattr_setflags');
      const envp = Object.entries(o.env).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`);
      const pid = [0];
      code(l.posix_spawn(pid, file, fa, attr, [...o.argv, null], [...envp, null]), 'posix_spawn', file);
      return pid[0]!;
    } finally {
      l.attr_destroy(attr);
    }
  } finally {
    l.fa_destroy(fa);
  }
}

/** Linux's normal scheduling class (SCHED_OTHER). */
export const SCHED_OTHER = 0;

/**
 * Put every thread of process `pid` (this process, or one of this user's) in the scheduling
 * class `policy` (SCHED_IDLE, SCHED_OTHER), keeping each one's nice value; how many threads
 * were moved. `except`: a thread left as it is (e.g. this process's main one: its id is the
 * pid). Threads it starts later inherit the class of the thread that starts them.
 * SysError when none was moved (ESRCH: gone; EPERM: not permitted); 0 when there was none
 * to move.
 */
export function setThreadsPolicy(pid: number, policy: number, opts: { except?: number } = {}): number {
  let tids: number[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`).map(Number);
  } catch {
    tids = [pid];
  }
  if (opts.except !== undefined) {
    tids = tids.filter((t) => t !== opts.except);
    if (tids.length === 0) return 0;
  }
  const param = new Int32Array([0]);
  let n = 0;
  let err = 0;
  for (const tid of tids) {
    if ((libc().sched_setscheduler(tid, policy, param) as number) === 0) n++;
    else if (koffi().errno() !== ESRCH) err = koffi().errno(); // ESRCH: the thread has exited
  }
  if (n === 0 || err) throw new SysError('sched_setscheduler', err || ESRCH, `pid ${pid}`);
  return n;
}
const ESRCH = 3;

const RLIMIT_NICE = 13;
const CAP_SYS_NICE = 23;

/**
 * Whether a thread of this user's, at this thread's nice value, may be moved out of
 * SCHED_IDLE back to the normal class (sched(7)): with CAP_SYS_NICE, or when RLIMIT_NICE
 * allows that nice value (20 - nice at most). Unprivileged processes usually may not.
 */
export function mayLeaveIdle(): boolean {
  try {
    const cap = /^CapEff:\s*([0-9a-f]+)/m.exec(fs.readFileSync('/proc/self/status', 'latin1'))?.[1];
    if (cap && ((BigInt(`0x${cap}`) >> BigInt(CAP_SYS_NICE)) & 1n) === 1n) return true;
  } catch { /* no /proc: ask the limit */ }
  const r = new BigUint64Array(2);
  if ((libc().getrlimit(RLIMIT_NICE, r) as number) < 0) return false;
  return r[0]! >= BigInt(20 - os.getPriority());
}

const RLIMIT_NOFILE = 7;
const RLIM_INFINITY = 2 ** 53 - 1; // as a number: larger than any fd

/** RLIMIT_NOFILE: the soft limit (an fd must be below it to be polled, or allocated) and the
 *  hard one (how far this process may raise the soft one). */
export function fdLimit(): { soft: number; hard: number } {
  const r = new BigUint64Array(2);
  check(libc().getrlimit(RLIMIT_NOFILE, r) as number, 'getrlimit');
  const n = (v: bigint): number => (v >= 2n ** 53n ? RLIM_INFINITY : Number(v));
  return { soft: n(r[0]!), hard: n(r[1]!) };
}

/** Set RLIMIT_NOFILE (the hard limit kept unless given); EPERM above a hard limit this
 *  process may not raise. */
export function setFdLimit(soft: number, hard = fdLimit().hard): void {
  const r = new BigUint64Array([BigInt(soft), hard >= RLIM_INFINITY ? 2n ** 64n - 1n : BigInt(hard)]);
  check(libc().setrlimit(RLIMIT_NOFILE, r) as number, 'setrlimit', `RLIMIT_NOFILE ${soft}`);
}

export function getpid(): number {
  return libc().getpid() as number;
}

/** execve(2) through libc. Returns only by throwing. */
export function execveRaw(file: string, argv: string[], envp: string[]): never {
  libc().execve(file, [...argv, null], [...envp, null]);
  throw new SysError('execve', koffi().errno(), file);
}

/** _exit(2): end the process now, without Node's exit-time cleanup. */
export function exitNow(status: number): never {
  libc()._exit(status);
  throw new Error('_exit returned');
}

export interface WaitResult { pid: number; status: number; exited: boolean; code: number | null; signal: number | null }

/** waitpid(2); with WNOHANG returns pid 0 while the child runs. */
export function waitpid(pid: number, options = 0): WaitResult {
  const status = [0];
  const r = check(libc().waitpid(pid, status, options) as number, 'waitpid', `pid ${pid}`);
  const s = status[0]!;
  const exited = r !== 0 && (s & 0x7f) === 0;
  const signaled = r !== 0 && ((s & 0x7f) + 1) >> 1 > 0 && (s & 0x7f) !== 0x7f;
  return { pid: r, status: s, exited, code: exited ? (s >> 8) & 0xff : null, signal: signaled ? s & 0x7f : null };
}

/** The fds open in this process (from /proc/self/fd), ascending. */
export function openFds(): number[] {
  return fs.readdirSync('/proc/self/fd').map(Number).filter((n) => Number.isInteger(n)).sort((a, b) => a - b);
}

/** What an fd refers to, as /proc/self/fd shows it ("/memfd:x (deleted)", "socket:[123]"). */
export function fdTarget(fd: number): string {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch (e) {
    throw new SysError('readlink', -((e as NodeJS.ErrnoException).errno ?? -9), `/proc/self/fd/${fd}`);
  }
}
