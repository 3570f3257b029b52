/*
 * kho/reboot: boot KHO in this image, and "kexec" into the next one: execve in the same pid.
 *
 * Boot (bootKho): read LUO_HANDOVER and remove it from the environment (children and later
 * images must not see a stale one); no entry → cold boot; a valid entry → adopt the arena
 * ("successor:<fd>": first receive the handover from the running image, successor.ts; fds
 * it sends before its freeze are used meanwhile: the arena is mapped and its large regions
 * viewed, the rest watched for input);
 * a corrupt or incompatible one → fatal: the message goes to stderr naming what was wrong and
 * the process exits with EXIT_PANIC, unless onCorrupt is 'cold' (warn, close the inherited
 * arena, boot cold). After an in-place exec, children inherited from the previous image are
 * reaped (now, and as they exit) so they do not linger as zombies.
 *
 * Reboot (kexec): carry exactly stdio, the arena (when KHO is finalized) and the fds the caller
 * registers; every other fd gets FD_CLOEXEC. Then exec: process.execve where Node has it
 * (≥ 22.15; it clears CLOEXEC on 0-2 itself), libc's execve through koffi elsewhere. If exec
 * fails, every fd flag changed here is put back and SysError is raised: the image keeps
 * running as it was.
 */
import fs from 'node:fs';
import { trace } from '../config.js';
import { HandoverError, LuoError, SysError, fail } from '../errors.js';
import * as sys from '../sys/index.js';
import { Arena } from './arena.js';
import { HANDOVER_ENV, Kho, type KhoOptions } from './kho.js';
import { SUCCESSOR_PREFIX, receiveHandover, type Received } from './successor.js';

/** Exit status of a fatal boot error (EX_SOFTWARE). */
export const EXIT_PANIC = 70;

export interface BootOptions extends KhoOptions {
  onCorrupt?: 'panic' | 'cold';
  /** Environment to read LUO_HANDOVER from (default process.env; the variable is removed). */
  env?: NodeJS.ProcessEnv;
  /** Successor: called right before it says it is ready (the previous image freezes when it
   *  hears that): finish whatever is still starting up (luo waits for its device worker). */
  beforeHandover?: () => void;
  /** Successor: called once the fds sent before the freeze are in hand (the arena mapped and
   *  viewed), before the previous image hears so and freezes: settle what would otherwise
   *  land in the pause (luo collects garbage here). */
  settle?: () => void;
}

export function bootKho(opts: BootOptions): Kho {
  const env = opts.env ?? process.env;
  const entry = env[HANDOVER_ENV];
  delete env[HANDOVER_ENV];
  if (entry === undefined || entry === '') return Kho.create(opts);
  let kho: Kho;
  let received: Received | null = null;
  const early: { arena: Arena | null; readiness: { set: sys.ReadySet; watched: Uint8Array } | null } = { arena: null, readiness: null };
  try {
    let real = entry;
    if (entry.startsWith(SUCCESSOR_PREFIX)) {
      // A successor: the previous image is still running; wait here for what it hands over.
      const fd = Number(entry.slice(SUCCESSOR_PREFIX.length));
      if (!Number.isInteger(fd) || fd < 3) throw new HandoverError(`${HANDOVER_ENV}=${JSON.stringify(entry)} does not name a link fd`);
      const got = receiveHandover(fd, {
        beforeHello: opts.beforeHandover,
        // Sent before the freeze: get ready to serve while the previous image still does.
        presend: ({ arena, regions, fds }) => {
          trace(`successor: ${fds.length + (arena >= 0 ? 1 : 0)} fds sent early`);
          if (arena >= 0) {
            early.arena = Arena.adopt(arena);
            early.arena.pin(regions);
          }
          early.readiness = watchForInput(fds);
          opts.settle?.();
          trace('successor: arena mapped, fds watched, settled');
        },
      });
      trace('successor: handover received');
      real = got.entry;
      received = got;
      // Early copies closed again: their numbers may be reused, so they are not watched.
      if (early.readiness) for (const f of got.closedEarly) if (f < early.readiness.watched.length) early.readiness.watched[f] = 0;
    }
    kho = Kho.adopt(real, { ...opts, premapped: early.arena });
    if (received) {
      kho.setIncomingFds(received.fdMap, early.readiness);
      sys.setCloexec(received.link, true); // fd 3 came without it: a later exec must not inherit it
      kho.setPreviousLink(received.link);
    }
  } catch (e) {
    early.readiness?.set.close();
    const msg = e instanceof HandoverError ? e.message : `ERR_HANDOVER: ${(e as Error).message}`;
    // A successor without its handover must never serve: the previous image still does.
    if (opts.onCorrupt === 'cold' && !entry.startsWith(SUCCESSOR_PREFIX)) {
      process.emitWarning(`luo: ignoring the handover and booting cold: ${msg}`);
      const fd = Number(/^[^:]*:(\d+):/.exec(entry)?.[1]);
      if (Number.isInteger(fd) && fd > 2) {
        try {
          if (sys.fdTarget(fd).startsWith('/memfd:luo-arena')) sys.close(fd);
        } catch { /* already gone */ }
      }
      return Kho.create(opts);
    }
    panic(msg);
  }
  // After an in-place exec this pid's children are the previous image's; a successor is a
  // new process and has none.
  if (!received) reapInheritedChildren();
  return kho;
}

/**
 * A readiness set over the fds sent early (successor.ts), so that after the handover the few
 * with input waiting are found without polling every one. Only a hint: if it cannot be made
 * (epoll limits), the successor polls instead.
 */
function watchForInput(fds: number[]): { set: sys.ReadySet; watched: Uint8Array } | null {
  let set: sys.ReadySet | null = null;
  try {
    set = new sys.ReadySet();
    set.add(fds);
    let size = 0;
    for (const fd of fds) size = Math.max(size, fd + 1);
    const watched = new Uint8Array(size);
    for (const fd of fds) watched[fd] = 1;
    return { set, watched };
  } catch (e) {
    set?.close();
    trace(`successor: cannot watch the fds sent early (${(e as Error).message}); polling instead`);
    return null;
  }
}

/** The kernel's panic(): a one-line reason on stderr, then exit. Never returns. */
export function panic(reason: string): never {
  try {
    fs.writeSync(2, `luo: fatal: ${reason}\n`);
  } catch { /* stderr closed */ }
  process.exit(EXIT_PANIC);
}

/** The next program image. argv[0] is the program name as the new image will see it. */
export interface Image {
  file: string;
  argv: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** This process's own command line: Node and its arguments (re-read from disk at exec). */
export function selfImage(): Image {
  return { file: process.execPath, argv: [process.argv0 || process.execPath, ...process.execArgv, ...process.argv.slice(1)], cwd: process.cwd() };
}

export interface RebootOptions {
  /** fds that the next image inherits beyond stdio and the arena. */
  keepFds?: Iterable<number>;
  /** Called right before execve (after fd flags are set, before the environment is read).
   *  Throwing abandons the exec (flags are restored). */
  beforeExec?: () => void;
}

/**
 * Execute the next image in this pid. With KHO finalized the handover goes with it;
 * otherwise the next image boots cold. Returns only by throwing (the image was not replaced).
 */
export function kexec(kho: Kho | null, image: Image, opts: RebootOptions = {}): never {
  if (!image.file || !Array.isArray(image.argv) || image.argv.length === 0) throw fail('EINVAL', 'next image needs a file and argv[0]');
  const keep = new Set<number>([0, 1, 2, ...(opts.keepFds ?? [])]);
  const handover = kho?.finalized ? kho.handover() : null;
  if (kho && handover) keep.add(kho.arena.fd);
  for (const fd of keep) if (!sys.isOpen(fd)) throw fail('EBADF', `fd ${fd} registered for the next image is not open`);

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
    const env: NodeJS.ProcessEnv = { ...(image.env ?? process.env) };
    delete env[HANDOVER_ENV];
    if (handover) env[HANDOVER_ENV] = handover;
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

/** The program execve will run: `file` itself if it has a slash, else the first executable
 *  match on PATH (as execvp). SysError ENOENT/EACCES when there is none. */
export function resolveExecutable(file: string, pathVar = process.env.PATH ?? '/usr/bin:/bin'): string {
  const candidates = file.includes('/') ? [file] : pathVar.split(':').filter(Boolean).map((d) => `${d}/${file}`);
  let errno = 2; // ENOENT
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (fs.statSync(c).isFile()) return c;
      errno = 13;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EACCES') errno = 13;
    }
  }
  throw new SysError('execve', errno, file);
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
