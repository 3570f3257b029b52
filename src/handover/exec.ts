/*
 * handover/exec: the in-place transport, the kernel's kexec for a process: execve of the next
 * image in this pid, carrying exactly stdio, the arena and the fds registered for it.
 *
 * Outgoing (execInPlace): every fd that is not carried gets FD_CLOEXEC, every carried one
 * loses it; the entry goes into the next image's environment (LUO_HANDOVER). Checked before
 * the point of no return: every carried fd is open, the program can be run, and the fd limit
 * holds the carried fds. Then exec: process.execve where Node has it (≥ 22.15; it clears
 * CLOEXEC on 0-2 itself), libc's execve through koffi elsewhere. If exec fails, every fd flag
 * changed here is put back and SysError is raised: the image keeps running as it was.
 * Incoming (afterExec): children inherited from the previous image are reaped (now, and as
 * they exit) so they do not linger as zombies; the carried fds are marked close-on-exec again
 * by whoever takes them.
 */
import fs from 'node:fs';
import { trace } from '../config.js';
import { LuoError, SysError, fail } from '../errors.js';
import * as sys from '../sys/index.js';
import { HANDOVER_ENV } from '../uapi/handover.js';
import { resolveExecutable, type Image } from './image.js';

export interface ExecOptions {
  /** fds that the next image inherits beyond stdio. */
  keepFds?: Iterable<number>;
  /** Called right before execve (after fd flags are set, before the environment is read).
   *  Throwing abandons the exec (flags are restored). */
  beforeExec?: () => void;
  /** Set in the next image's environment too (over the image's own). */
  env?: Record<string, string>;
}

/**
 * Execute the next image in this pid, with `entry` as its LUO_HANDOVER (none: it boots cold).
 * Returns only by throwing (the image was not replaced).
 */
export function execInPlace(entry: string | null, image: Image, opts: ExecOptions = {}): never {
  if (!image.file || !Array.isArray(image.argv) || image.argv.length === 0) throw fail('EINVAL', 'next image needs a file and argv[0]');
  const keep = new Set<number>([0, 1, 2, ...(opts.keepFds ?? [])]);
  for (const fd of keep) if (!sys.isOpen(fd)) throw fail('EBADF', `fd ${fd} registered for the next image is not open`);
  let highest = 0;
  for (const fd of keep) highest = Math.max(highest, fd);
  const limit = sys.fdLimit();
  if (highest >= limit.soft) {
    throw fail('EMFILE', `the next image would inherit fd ${highest}, above its fd limit (${limit.soft}; RLIMIT_NOFILE): raise the limit (ulimit -n) before updating`);
  }

  const changed: Array<[number, boolean]> = [];
  const restore = (): void => {
    for (const [fd, was] of changed) {
      try {
        sys.setCloexec(fd, was);
      } catch { /* closed meanwhile */ }
    }
  };
  for (const fd of sys.openFds()) {
    let was: boolean;
    try {
      was = sys.isCloexec(fd);
    } catch {
      continue; // the directory fd readdir used, already closed
    }
    const want = !keep.has(fd);
    if (was !== want) {
      sys.setCloexec(fd, want);
      changed.push([fd, was]);
    }
  }

  const oldCwd = process.cwd();
  try {
    if (image.cwd) process.chdir(image.cwd);
    // Fail here, before the point of no return, on a program that cannot be executed.
    const file = resolveExecutable(image.file, (image.env ?? process.env).PATH);
    opts.beforeExec?.();
    trace('exec');
    // The environment is read after beforeExec, so it can still add to process.env.
    const env: NodeJS.ProcessEnv = { ...(image.env ?? process.env), ...opts.env };
    delete env[HANDOVER_ENV];
    if (entry) env[HANDOVER_ENV] = entry;
    const envp = Object.entries(env).filter((kv): kv is [string, string] => kv[1] !== undefined).map(([k, v]) => `${k}=${v}`);
    const nodeExecve = (process as unknown as { execve?: (f: string, a: string[], e: Record<string, string>) => never }).execve;
    if (typeof nodeExecve === 'function') {
      try {
        nodeExecve(file, image.argv, Object.fromEntries(envp.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])));
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        throw new SysError('execve', -(err.errno ?? 0) || 8, image.file);
      }
    }
    return sys.execveRaw(file, image.argv, envp);
  } catch (e) {
    restore();
    try {
      process.chdir(oldCwd);
    } catch { /* best effort */ }
    if (e instanceof LuoError) throw e;
    throw fail('EINVAL', `exec of ${image.file} failed: ${(e as Error).message}`);
  }
}

/** Children of this pid (inherited across exec: they are still ours). */
export function childPids(): number[] {
  const pids = new Set<number>();
  try {
    for (const tid of fs.readdirSync('/proc/self/task')) {
      const s = fs.readFileSync(`/proc/self/task/${tid}/children`, 'utf8').trim();
      for (const p of s.split(/\s+/)) if (p) pids.add(Number(p));
    }
    return [...pids];
  } catch {
    // Kernel without CONFIG_PROC_CHILDREN: scan /proc for our ppid.
    const me = process.pid;
    for (const d of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        if (ppid === me) pids.add(Number(d));
      } catch { /* exited */ }
    }
    return [...pids];
  }
}

/**
 * Reap the children the previous image left: the exited ones now, the running ones as they
 * exit (an unref'd poll, so it never keeps the process alive). Node only reaps children it
 * spawned itself; these would otherwise stay zombies.
 */
export function reapInheritedChildren(pollMs = 200): { reaped: number; running: number } {
  const pending = new Set(childPids());
  let reaped = 0;
  const sweep = (): void => {
    for (const pid of pending) {
      try {
        if (sys.waitpid(pid, sys.WNOHANG).pid === pid) {
          pending.delete(pid);
          reaped++;
        }
      } catch {
        pending.delete(pid); // ECHILD: someone else reaped it, or it is not ours
      }
    }
  };
  sweep();
  const running = pending.size;
  if (pending.size > 0) {
    const t = setInterval(() => {
      sweep();
      if (pending.size === 0) clearInterval(t);
    }, pollMs);
    t.unref();
  }
  return { reaped, running };
}
