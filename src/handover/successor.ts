/*
 * handover/successor: the transport to a pre-started successor process, luo's alternative to
 * the in-place exec. The next image is started while the current one still serves, loads its
 * code and blocks in boot. Then, still serving, the current image sends it the arena and every
 * fd that will not change until the freeze (presend): the successor maps the arena and gets
 * ready to serve meanwhile. Only then does the current image freeze and send what is left:
 * the handover string, the fds opened since, and which early ones are gone. The pause is the
 * freeze plus a small delta, not a Node start, nor a pass of the kernel over every fd; the
 * price is a new pid. The messages are declared in uapi/handover.ts.
 *
 * What may be sent early: an fd whose caller-given key (an object) still names it at the
 * freeze. The same key with the same fd at the freeze means the same open file (the key is
 * an object that lives exactly as long as the fd, such as a libuv handle), so it is not sent
 * again; anything else travels in the delta and the early copy is closed.
 *
 * Lifecycle, current image: start() (posix_spawn; in SCHED_IDLE where it can be given its
 * class back) → ready() (the loop keeps serving; rejects if the successor exits or times out,
 * and kills it) → presend() (optional; the loop keeps serving between datagrams; rejects and
 * kills the successor on any failure: nothing was given up, the successor held copies; the
 * successor's answer brings its wake set, kept until abort(): wakeSet) →
 * ahead() (optional: it reads preserved memory now; the same on failure) → restorePriority()
 * (right before the freeze, or once seen starving in SCHED_IDLE, or 10 s after the start, or
 * a quarter into a wait for it, whichever comes first; EPERM kills it) → handover()
 * (synchronous: send, then block until "taken"; throws if the successor dies or does not
 * answer in time, and kills it, so the caller can cancel and keep serving; with the idle
 * option this image's threads other than its main one wait in SCHED_IDLE from the send until
 * the outcome, committed or failed, or until handover() throws) → retire() →
 * awaitRelease() (blocks until the successor's FINISH closes the link, bounded) → the caller
 * exits. Before the handover, abort() kills the successor and closes the link; the successor
 * then exits with "the previous image cancelled the handover".
 * Successor: receiveHandover() blocks until everything has arrived or the link closes (fatal:
 * a successor without its handover must not serve). A malformed message is fatal too. With
 * the fds sent early it makes the wake set (an epoll instance over those connections, keyed
 * by the current image's numbers) and sends it with its answer, then closes its own copy; if
 * it cannot make one, it answers without (the current image then parks nothing).
 */
import fs from 'node:fs';
import os from 'node:os';
import { HandoverError, LuoError, fail } from '../errors.js';
import * as sys from '../sys/index.js';
import {
  AHEAD, COMMIT, GUARD_ENV, HANDOVER_ENV, HANDOVER_V1, HANDOVER_V2, HELLO, PRESEND, SUCCESSOR_FD, SUCCESSOR_PREFIX, checkChunks, decodeChunk,
  decodeFailure, decodeHeader, decodeHello, encodeMessage, parseMessage, withArenaFd, type Failure, type Guard,
} from '../uapi/handover.js';
import { trace } from '../config.js';
import { resolveExecutable, type Image } from './image.js';
import { SLICE_MS, slicer } from '../util/slicer.js';

/** An fd, and the object that names it for as long as it is open (see the header). */
export interface FdRef { fd: number; key: object | null; /** A connection (a stream the next image adopts as a socket). */ stream?: boolean }

/** What a successor knows before the freeze (sent with presend-v1). */
export interface PresendInfo {
  /** The arena's fd in the current image (one of the refs). */
  arenaFd: number;
  /** Memory preserved so far: [address, size] pairs. A hint for mapping ahead, not a promise. */
  regions: Array<[number, number]>;
}

const json = encodeMessage;
/** Each fd number once (two tokens may carry the same fd: it is one file, sent once). */
export function unique(refs: FdRef[]): FdRef[] {
  let max = 0;
  for (const r of refs) if (r.fd > max) max = r.fd;
  const seen = new Uint8Array(max + 1);
  let dup = false;
  for (const r of refs) {
    if (seen[r.fd]) dup = true;
    seen[r.fd] = 1;
  }
  if (!dup) return refs;
  seen.fill(0);
  return refs.filter((r) => (seen[r.fd] ? false : (seen[r.fd] = 1)));
}
/**
 * Of `refs` (an fd named twice counts once), what a successor that got `early` (key → its fd
 * and index in the presend) lacks: the fds to send, and the indices of the early ones not
 * carried after all (an fd is the same open file when its key still names it). `flat`: the
 * same fds as numbers, with the ones a handler vouches for (the very fd it sent early) found
 * by number, without reading their refs. One pass over `refs`.
 */
export function earlyDelta(refs: FdRef[], early: ReadonlyMap<object, { fd: number; index: number }>, earlyCount: number, flat: Flat | null = null): { send: number[]; closed: number[] } {
  const kept = new Uint8Array(earlyCount);
  const send: number[] = [];
  // Each fd once (two tokens may carry the same fd: one file, sent once), in the same pass.
  // The marks are one scratch array, cleared before each use: allocating 64 KiB cost ~170 µs
  // here (16 fresh pages, a fault each), 50 ms over the warm-up's 300 runs.
  let seen = seenScratch;
  seen.fill(0);
  const byFd = flat?.earlyIndexOfFd ?? null;
  for (let i = 0; i < refs.length; i++) {
    const fd = flat ? flat.fds[i]! : refs[i]!.fd;
    if (fd >= seen.length) {
      const more = new Uint8Array(Math.max(fd + 1, 2 * seen.length));
      more.set(seen);
      seen = seenScratch = more;
    }
    if (seen[fd] === 1) continue;
    seen[fd] = 1;
    if (flat && byFd && flat.same[i] === 1 && fd < byFd.length) {
      const at = byFd[fd]!;
      if (at >= 0 && kept[at] === 0) {
        kept[at] = 1;
        continue;
      }
    }
    const r = refs[i]!;
    const e = r.key ? early.get(r.key) : undefined;
    if (e !== undefined && e.fd === fd && kept[e.index] === 0) kept[e.index] = 1;
    else send.push(fd);
  }
  const closed: number[] = [];
  for (let i = 0; i < earlyCount; i++) if (kept[i] === 0) closed.push(i);
  return { send, closed };
}

/** earlyDelta's marks by fd number (grown when an fd is beyond it; earlyDelta is synchronous). */
let seenScratch = new Uint8Array(65536);

/** carried refs as flat arrays (Files.carriedFlat), and each early fd's index by number. */
export interface Flat { fds: Int32Array; same: Uint8Array; earlyIndexOfFd?: Int32Array }

const chunksOf = <T>(xs: T[], n: number): T[][] => {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
};

export interface SuccessorOptions {
  /** Preload luo's guard into it (a file URL; the successor then says why if it fails). */
  guard?: { url: string; deadline: number } | null;
  /** Start it in SCHED_IDLE until right before the freeze (restorePriority), where this
   *  process may give it its class back: it then prepares on CPU time the serving image does
   *  not want. And this image's other threads wait in SCHED_IDLE from the handover to its
   *  outcome: it serves nothing then, and its successor serves. */
  idle?: boolean;
}

/** How a transactional handover ended (after "taken"). */
export type Outcome =
  | { committed: true }
  | { committed: false; code: 'ECHILD' | 'ETIMEDOUT' | 'ECANCELED'; message: string; failure: Failure | null };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How long a successor prepares in SCHED_IDLE at most: then in the normal class, so that a
 *  machine with no idle CPU time never starves an update. It leaves SCHED_IDLE sooner when
 *  it is seen starving there (runnable at two looks STARVED_LOOK_MS apart or more, and on a
 *  CPU for under STARVED_SHARE of the time between them), and a wait for it leaves it there
 *  for at most IDLE_SHARE of that wait's timeout (luo update --timeout may be short). One
 *  that gets CPU time there is not slowed by it, so the bound is loose: at 2 s, a successor
 *  booting and building 10 000 sockets beside a busy service (2 cores, 10 000 requests a
 *  second) was put in the normal class half-way and took a core from the service (a client
 *  waited 60 ms, before the freeze). The looks are far apart for the same reason: 50 ms
 *  apart, they called starving, in 6 of 7 such updates, successors that had had 18-46 % of
 *  a core over the 250 ms before (under 10 % in one 50 ms stretch of it), and in the normal
 *  class each then took 35-74 %, from the service. */
export const IDLE_MAX_MS = 10_000;
export const IDLE_SHARE = 0.25;
export const STARVED_SHARE = 0.1;
const STARVED_LOOK_MS = 250;

export class Successor {
  /** Its pid (started with posix_spawn: Node does not know it; #reap waits for it). */
  readonly #pid: number;
  #fd: number;
  #exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  #accepts: string[] = [];
  /** Sent early: key → (fd, index in the presend). */
  #early: Map<object, { fd: number; index: number }> | null = null;
  #wake: sys.ReadySet | null = null;
  #earlyCount = 0;
  /** Each early fd's index in the presend, by its number (-1: not sent). */
  #earlyIndexOfFd = new Int32Array(0);
  #handedOver = false;
  /** What its guard said when it gave up ({"failed":…}). */
  #failure: Failure | null = null;
  /** It prepares in SCHED_IDLE until then at the latest (restorePriority gives it its class back). */
  #idle = false;
  #idleUntil = 0;
  #leftIdle: 'freeze' | 'starving' | 'time' | null = null;
  /** Its main thread at the last look, while in SCHED_IDLE (#starving). */
  #look: { at: number; cpuNs: number; runnable: boolean } | null = null;
  /** This image's other threads may wait in SCHED_IDLE from the handover until its outcome
   *  (the idle option, where they can be given their class back); and whether they do. */
  #mayStandAside = false;
  #standsAside = false;

  private constructor(pid: number, fd: number) {
    this.#pid = pid;
    this.#fd = fd;
  }

  /** Start the next image as a successor (stdio inherited, the link as fd 3). */
  static start(image: Image, opts: SuccessorOptions = {}): Successor {
    if (!image.file || !Array.isArray(image.argv) || image.argv.length === 0) throw fail('EINVAL', 'next image needs a file and argv[0]');
    // Fail now, as an exec would, on a program that cannot be run (spawn would only say so
    // asynchronously, and the update would wait for a successor that never comes).
    const file = resolveExecutable(image.file, (image.env ?? process.env).PATH);
    const [mine, theirs] = sys.seqpacketPair();
    let pid: number;
    try {
      const env: NodeJS.ProcessEnv = { ...(image.env ?? process.env), [HANDOVER_ENV]: `${SUCCESSOR_PREFIX}${SUCCESSOR_FD}` };
      if (opts.guard) Object.assign(env, guardEnv(env, { mode: 'successor', deadline: opts.guard.deadline, upBy: opts.guard.deadline, entry: null }, opts.guard.url));
      // posix_spawn, not Node's spawn (a fork of this image: its page tables copied, then
      // torn down at the child's exec, 10-20 ms of this event loop here).
      pid = sys.spawnProcess(file, { argv: image.argv, env, cwd: image.cwd, fds: [[theirs, SUCCESSOR_FD]] });
    } catch (e) {
      sys.close(mine);
      throw fail('EINVAL', `cannot start the successor ${image.file}: ${(e as Error).message}`);
    } finally {
      sys.close(theirs);
    }
    const next = new Successor(pid, mine);
    // Its start-up, the early fds and their sockets take it a core for a second or more at
    // 10 000 connections: on CPU time the serving image does not want (a two-core machine
    // otherwise delays the serving image's answers by tens of ms). It has just exec'd:
    // threads it starts later inherit the class. Only where it can be given its class back:
    // it must never serve in SCHED_IDLE. (posix_spawn sets SCHED_OTHER, FIFO or RR only.)
    if (opts.idle && sys.mayLeaveIdle()) {
      next.#mayStandAside = true;
      try {
        sys.setThreadsPolicy(pid, sys.SCHED_IDLE);
        next.#idle = true;
        next.#idleUntil = Date.now() + IDLE_MAX_MS;
        trace('successor: preparing in SCHED_IDLE');
      } catch { /* gone already, or refused: it prepares in the normal class */ }
    }
    return next;
  }

  /** True when, in SCHED_IDLE, it wants a CPU and does not get one: runnable at this look
   *  and the last (STARVED_LOOK_MS or more before), having run for under STARVED_SHARE of the
   *  time between them. A successor that sleeps (waits for this image, reads a file) is not. */
  #starving(now: number, state: string | null): boolean {
    const prev = this.#look;
    if (prev && now - prev.at < STARVED_LOOK_MS) return false;
    const cpuNs = state === null ? null : sys.processCpuNs(this.#pid);
    this.#look = cpuNs === null ? null : { at: now, cpuNs, runnable: state === 'R' };
    if (cpuNs === null || !prev) return false;
    return prev.runnable && state === 'R' && cpuNs - prev.cpuNs < (now - prev.at) * 1e6 * STARVED_SHARE;
  }

  /**
   * A successor that prepared in SCHED_IDLE gets the normal class back, right before the
   * freeze (it serves from the handover on; until then its work, reading memory ahead and the
   * collections that come with it, takes nothing from the serving image). EPERM, having
   * killed it, when that is refused.
   */
  restorePriority(why: 'freeze' | 'starving' | 'time' = 'freeze'): void {
    if (!this.#idle || !this.#pid) return;
    this.#idle = false;
    this.#leftIdle = why;
    try {
      sys.setThreadsPolicy(this.#pid, sys.SCHED_OTHER);
    } catch (e) {
      this.abort();
      throw fail('EPERM', `the successor's scheduling class could not be given back (${(e as Error).message}); it was killed`);
    }
  }

  /** Why it left SCHED_IDLE: right before the freeze, seen starving there, or its time
   *  there was up (IDLE_MAX_MS, a quarter of a wait); null while there, or never put there. */
  get leftIdle(): 'freeze' | 'starving' | 'time' | null {
    return this.#leftIdle;
  }

  get pid(): number | undefined {
    return this.#pid;
  }

  /** The successor takes fds before the freeze (it said so in its hello). */
  get acceptsPresend(): boolean {
    return this.#accepts.includes(PRESEND);
  }

  /** The successor keeps the update a transaction until its FINISH (commit-v1). */
  get acceptsCommit(): boolean {
    return this.#accepts.includes(COMMIT);
  }

  /** The successor reads preserved memory before the freeze, and tables that name it (ahead-v1). */
  get acceptsAhead(): boolean {
    return this.#accepts.includes(AHEAD);
  }

  /**
   * Still serving, before the freeze: have the successor read these preserved regions now
   * ([address, size] each: memory written for the handover, never changed again). Resolves
   * with how many it read. EPROTO if it does not accept ahead-v1 or answers nonsense; any
   * failure kills it (it held only copies: nothing is lost).
   */
  async ahead(regions: Array<[number, number]>, timeoutMs: number): Promise<number> {
    if (this.#fd < 0) throw fail('ECANCELED', 'the successor was aborted');
    if (!this.acceptsAhead) throw fail('EPROTO', 'the successor does not read memory before the freeze');
    try {
      sys.sendPacket(this.#fd, json({ luo: AHEAD, regions }));
    } catch (e) {
      this.abort();
      throw fail('EIO', `asking the successor to read memory ahead failed: ${(e as Error).message}`);
    }
    const m = await this.#next(timeoutMs, 'while reading memory ahead');
    const n = m.read;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > regions.length) {
      this.abort();
      throw fail('EPROTO', `the successor answered ${JSON.stringify(m).slice(0, 80)} to ${regions.length} regions to read ahead`);
    }
    return n;
  }

  /** Its exit, if it has exited (only this object reaps it: Node does not know it). */
  #reap(): void {
    if (this.#exit || !this.#pid) return;
    try {
      const w = sys.waitpid(this.#pid, sys.WNOHANG);
      if (w.pid === this.#pid) this.#exit = { code: w.code, signal: w.signal !== null ? signalName(w.signal) : null };
    } catch { /* not our child any more: nothing to reap */ }
  }

  #exitText(): string {
    const e = this.#exit!;
    return e.signal ? `was killed by ${e.signal}` : `exited with status ${e.code}`;
  }

  /** "(SIGSTOP)" when it is stopped or traced: it will not answer, however long one waits. */
  #stopped(st: string | null = sys.processState(this.#pid)): boolean {
    return st === 'T' || st === 't';
  }

  /** Its last words, when its guard sent more than its exit status: ": <reason>". */
  #why(): string {
    const f = this.#failure;
    if (!f || /^it exited with status \d+$/.test(f.reason)) return '';
    return `: ${f.reason}`;
  }

  /** What its guard said, if it said anything. */
  get failure(): Failure | null {
    return this.#failure;
  }

  /** Read what the successor left on the link before it went: its guard's {"failed":…}. */
  #drain(): void {
    try {
      while (this.#fd >= 0 && (sys.poll([this.#fd], 0)[0] ?? 0) & sys.POLLIN) {
        const p = sys.recvPacket(this.#fd, 65536, GROW);
        if (!p || p.eof) return;
        for (const fd of p.fds) sys.close(fd);
        try {
          this.#tookFailure(parseMessage(p.data, 'message'));
        } catch { /* not a message: nothing to say */ }
      }
    } catch { /* the link is gone */ }
  }

  /** Take a {"failed":…} message; true when `m` was one. */
  #tookFailure(m: Record<string, unknown>): boolean {
    if (!('failed' in m)) return false;
    this.#failure = decodeFailure(m);
    return true;
  }

  /**
   * Wait, without blocking the loop, for one message from the successor. Rejects (having
   * killed it) when it exits, closes the link, is stopped or is not heard from within timeoutMs.
   */
  async #next(timeoutMs: number, what: string, keep?: (fds: number[]) => void): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    let checked = Date.now();
    const idleUntil = Math.min(this.#idleUntil, checked + timeoutMs * IDLE_SHARE);
    this.#look = null; // starving is judged from two looks within one wait
    for (;;) {
      if (this.#fd < 0) throw fail('ECANCELED', 'the successor was aborted');
      const [rev] = sys.poll([this.#fd], 0);
      if (rev) {
        const p = sys.recvPacket(this.#fd, 65536, GROW);
        if (p && !p.eof) {
          let m: Record<string, unknown> | null = null;
          try {
            m = parseMessage(p.data, 'message');
          } catch { /* reported below */ }
          // fds come only with the answer asked for (the wake set): any other is closed.
          if (m && keep && !this.#tookFailure(m)) {
            keep(p.fds);
            return m;
          }
          for (const fd of p.fds) sys.close(fd);
          if (m && this.#tookFailure(m)) continue;
          if (m) return m;
          this.abort();
          throw fail('EPROTO', `the successor said ${JSON.stringify(p.data.toString().slice(0, 80))} ${what}`);
        }
        // EOF: it closed the link (usually by exiting); wait for its exit status below.
        const until = Date.now() + 1000;
        for (this.#reap(); !this.#exit && Date.now() < until; this.#reap()) await sleep(5);
        this.abort();
        throw fail('ECHILD', `the successor crashed ${what}: it ${this.#exit ? this.#exitText() : 'closed the handover link'}${this.#why()}`);
      }
      this.#reap();
      if (this.#exit) {
        this.#drain();
        this.abort();
        throw fail('ECHILD', `the successor crashed ${what}: it ${this.#exitText()}${this.#why()}`);
      }
      if (Date.now() - checked >= 50) {
        checked = Date.now();
        const state = sys.processState(this.#pid);
        // A machine with no idle CPU time would starve it: seen starving, or past IDLE_MAX_MS
        // or a quarter of this wait, it prepares in the normal class.
        if (this.#idle) {
          const why = checked >= idleUntil ? 'time' : this.#starving(checked, state) ? 'starving' : null;
          if (why) {
            trace(`successor: the normal class after ${why === 'time' ? 'its time in SCHED_IDLE' : 'starving in SCHED_IDLE'}`);
            this.restorePriority(why);
          }
        }
        if (this.#stopped(state)) {
          this.abort();
          throw fail('ETIMEDOUT', `the successor was stopped (SIGSTOP) ${what}; it was killed`);
        }
      }
      if (Date.now() > deadline) {
        this.abort();
        throw fail('ETIMEDOUT', `the successor was too slow: no answer within ${timeoutMs} ms ${what}; it was killed`);
      }
      await sleep(1);
    }
  }

  /** Resolves when the successor has loaded and waits for the handover. Never blocks the loop. */
  async ready(timeoutMs: number): Promise<void> {
    const m = await this.#next(timeoutMs, 'before it was ready');
    try {
      this.#accepts = decodeHello(m).accepts;
    } catch (e) {
      this.abort();
      throw fail('EPROTO', (e as Error).message.replace(/^ERR_HANDOVER: /, ''));
    }
  }

  /**
   * Send fds early (presend-v1), while this image keeps serving: the loop runs between
   * slices of the work (10 000 fds: their keys noted, their datagrams sent, ~40 ms in one go
   * here). Resolves once the successor holds them all. An fd closed before its datagram went
   * (its socket closed meanwhile) is sent as a placeholder (/dev/null): its key is gone by
   * the freeze, so the handover drops that copy, as it drops the copy of a number reused
   * under a dead key. EPROTO if the successor did not accept presend; any failure kills the
   * successor (it only held copies: nothing is lost).
   */
  async presend(refs: FdRef[], info: PresendInfo, timeoutMs: number): Promise<void> {
    if (this.#fd < 0) throw fail('ECANCELED', 'the successor was aborted');
    if (!this.acceptsPresend) throw fail('EPROTO', 'the successor does not accept fds before the freeze');
    if (this.#early) throw fail('EBUSY', 'fds were already sent early to this successor');
    const early = new Map<object, { fd: number; index: number }>();
    const fds: number[] = [];
    const streams: number[] = [];
    let placeholder = -1;
    try {
      const list = unique(refs);
      const due = slicer();
      for (let i = 0; i < list.length; i++) {
        const turn = due(i);
        if (turn) await turn;
        const r = list[i]!;
        if (r.key) early.set(r.key, { fd: r.fd, index: fds.length });
        if (r.stream) streams.push(fds.length);
        fds.push(r.fd);
      }
      if (this.#fd < 0) throw fail('ECANCELED', 'the successor was aborted');
      const chunks = chunksOf(fds, sys.MAX_FDS);
      sys.sendPacket(this.#fd, json({ luo: PRESEND, fds, chunks: chunks.length, arena: info.arenaFd, regions: info.regions, streams }));
      let slice = performance.now();
      for (let i = 0; i < chunks.length; i++) {
        const head = json({ chunk: i });
        try {
          sys.sendPacket(this.#fd, head, chunks[i]);
        } catch (e) {
          if ((e as LuoError).code !== 'EBADF') throw e;
          if (placeholder < 0) placeholder = fs.openSync('/dev/null', 'r');
          const ph = placeholder;
          sys.sendPacket(this.#fd, head, chunks[i]!.map((f) => (sys.isOpen(f) ? f : ph)));
        }
        if (performance.now() - slice >= SLICE_MS) {
          await new Promise((r) => setImmediate(r)); // keep serving
          slice = performance.now();
        }
        if (this.#fd < 0) throw fail('ECANCELED', 'the successor was aborted');
      }
    } catch (e) {
      this.abort();
      if (e instanceof LuoError) throw e;
      throw fail('EIO', `sending fds to the successor failed: ${(e as Error).message}`);
    } finally {
      if (placeholder >= 0) fs.closeSync(placeholder);
    }
    let got: number[] = [];
    const m = await this.#next(timeoutMs, 'while taking the fds sent early', (f) => void (got = f));
    if (m.presented !== fds.length) {
      for (const f of got) sys.close(f);
      this.abort();
      throw fail('EPROTO', `the successor holds ${String(m.presented)} of the ${fds.length} fds sent early`);
    }
    this.#adoptWake(m.wake, got, streams.length);
    this.#early = early;
    this.#earlyCount = fds.length;
    let max = 0;
    for (const fd of fds) if (fd > max) max = fd;
    this.#earlyIndexOfFd = new Int32Array(max + 1).fill(-1);
    for (let i = 0; i < fds.length; i++) this.#earlyIndexOfFd[fds[i]!] = i;
  }

  /**
   * Give the successor the handover string and the fds it does not hold yet; block until it
   * has taken them all. Throws (having killed the successor) when it dies, is stopped or does
   * not answer within timeoutMs (the freeze deadline: this image is frozen meanwhile).
   */
  handover(entry: string, refs: FdRef[], timeoutMs: number, flat: Flat | null = null): void {
    if (this.#fd < 0) throw fail('ECANCELED', 'the successor was aborted');
    this.restorePriority();
    let head: Record<string, unknown>;
    let send: number[];
    const commit = this.acceptsCommit;
    if (this.#early) {
      // Only what the successor does not hold already; and which of its copies to drop.
      // (Made as warm.ts makes it: V8's optimized earlyDelta is for objects of this shape.)
      const f: Flat | null = flat && flat.fds.length === refs.length && flat.same.length === refs.length ? { fds: flat.fds, same: flat.same, earlyIndexOfFd: this.#earlyIndexOfFd } : null;
      const { send: fds, closed } = earlyDelta(refs, this.#early, this.#earlyCount, f);
      send = fds;
      head = { luo: HANDOVER_V2, entry, fds, closed, ...(commit ? { commit: true } : {}) };
    } else {
      send = unique(refs).map((r) => r.fd);
      head = { luo: HANDOVER_V1, entry, fds: send, ...(commit ? { commit: true } : {}) };
    }
    const chunks = chunksOf(send, sys.MAX_FDS);
    try {
      sys.sendPacket(this.#fd, json({ ...head, chunks: chunks.length }));
      chunks.forEach((c, i) => sys.sendPacket(this.#fd, json({ chunk: i }), c));
      trace(`handover: sent (${send.length} fds, ${chunks.length} chunks)`);
      this.#standAside();
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const left = deadline - Date.now();
        if (left <= 0) throw fail('ETIMEDOUT', `the successor was too slow: it did not take the handover within ${timeoutMs} ms (the freeze deadline); it was killed`);
        const [rev] = sys.poll([this.#fd], Math.min(left, 50));
        if (!rev) {
          if (this.#stopped()) throw fail('ETIMEDOUT', 'the successor was stopped (SIGSTOP) while taking the handover; it was killed');
          continue;
        }
        const p = sys.recvPacket(this.#fd, 65536, GROW);
        if (!p || p.eof) {
          const until = Date.now() + 1000;
          while (!this.#exit && Date.now() < until) {
            this.#reap();
            if (!this.#exit) sys.poll([], 5);
          }
          throw fail('ECHILD', `the successor crashed while taking the handover: it ${this.#exit ? this.#exitText() : 'closed the link'}${this.#why()}`);
        }
        const m = parseMessage(p.data, 'answer to the handover');
        if (this.#tookFailure(m)) continue;
        if (m.taken !== refs.length) throw fail('EPROTO', `the successor took ${m.taken} fds, ${refs.length} were handed over`);
        break;
      }
    } catch (e) {
      this.#standBack();
      this.abort();
      if (e instanceof LuoError) throw e;
      throw fail('EIO', `handover to the successor failed: ${(e as Error).message}`);
    }
    this.#handedOver = true;
  }

  /**
   * Right after the handover is sent: this image serves nothing until its outcome (its main
   * thread blocks in poll), but its other threads may go on with what they had started (four
   * of them, V8's helper threads by every sign, most likely marking its heap, were seen here
   * taking both cores of a two-core machine for the successor's whole pause at 10 000
   * connections). They wait in SCHED_IDLE until #standBack, which runs at the outcome before
   * anything else. Best effort: a thread that cannot be moved keeps its class.
   */
  #standAside(): void {
    if (!this.#mayStandAside || this.#standsAside) return;
    try {
      if (sys.setThreadsPolicy(process.pid, sys.SCHED_IDLE, { except: process.pid }) > 0) {
        this.#standsAside = true;
        trace('handover: this image\'s other threads in SCHED_IDLE');
      }
    } catch { /* they keep their class */ }
  }

  /** This image's other threads back in the normal class (see #standAside). */
  #standBack(): void {
    if (!this.#standsAside) return;
    this.#standsAside = false;
    try {
      sys.setThreadsPolicy(process.pid, sys.SCHED_OTHER, { except: process.pid });
    } catch (e) {
      process.emitWarning(`luo: this image's threads could not be given their scheduling class back after the handover: ${(e as Error).message}`);
    }
  }

  /**
   * After the handover of a transaction (commit-v1): block until the successor commits (its
   * FINISH asks; this image answers "committed" and will not resume), or fails: it exits or
   * closes the link, is stopped, or has not committed by `deadline` (ms since the epoch). A
   * failed one is killed and reaped before this returns: it can never write the arena after.
   * This image's event loop does not run meanwhile: it serves nothing and accepts nothing.
   */
  awaitOutcome(deadline: number): Outcome {
    try {
      return this.#awaitOutcome(deadline);
    } finally {
      this.#standBack();
    }
  }

  #awaitOutcome(deadline: number): Outcome {
    const failed = (code: 'ECHILD' | 'ETIMEDOUT' | 'ECANCELED', what: string): Outcome => {
      this.#drain();
      this.terminate();
      return { committed: false, code, message: `${what}${this.#why()}`, failure: this.#failure };
    };
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) return failed('ETIMEDOUT', `the successor was too slow: it had not finished its update by the deadline (${new Date(deadline).toISOString()}); it was killed`);
      let rev = 0;
      try {
        [rev] = sys.poll([this.#fd], Math.min(left, 50)) as [number];
      } catch { /* the link is gone */ }
      if (!rev) {
        this.#reap();
        if (this.#exit) return failed(this.#failure?.reason.startsWith('rolled back') ? 'ECANCELED' : 'ECHILD', `the successor ${this.#failure?.reason.startsWith('rolled back') ? 'gave up' : 'crashed'} after it took over: it ${this.#exitText()}`);
        if (this.#stopped()) return failed('ETIMEDOUT', 'the successor was stopped (SIGSTOP) after it took over; it was killed');
        continue;
      }
      let p: sys.Packet | null = null;
      try {
        p = sys.recvPacket(this.#fd, 65536, GROW);
      } catch { /* reset: it is gone */ }
      if (!p) continue;
      for (const fd of p.fds) sys.close(fd);
      if (p.eof) {
        const until = Date.now() + 1000;
        while (!this.#exit && Date.now() < until) {
          this.#reap();
          if (!this.#exit) sys.poll([], 5);
        }
        const gaveUp = this.#failure?.reason.startsWith('rolled back');
        return failed(gaveUp ? 'ECANCELED' : 'ECHILD', `the successor ${gaveUp ? 'gave up' : 'crashed'} after it took over: it ${this.#exit ? this.#exitText() : 'closed the link'}`);
      }
      let m: Record<string, unknown>;
      try {
        m = parseMessage(p.data, 'message');
      } catch {
        return failed('ECHILD', `the successor said something malformed after it took over (${p.data.toString().slice(0, 60)})`);
      }
      if (this.#tookFailure(m)) continue;
      if (m.commit === 1) {
        try {
          sys.sendPacket(this.#fd, json({ committed: 1 }));
          return { committed: true };
        } catch {
          return failed('ECHILD', 'the successor asked to commit and then closed the link before the answer');
        }
      }
    }
  }

  /** Kill the successor (unless it exited already) and reap it, waiting at most 2 s. */
  terminate(): void {
    this.#reap();
    if (!this.#exit) {
      try {
        process.kill(this.#pid, 'SIGKILL');
      } catch { /* gone */ }
      const until = Date.now() + 2000;
      while (!this.#exit && Date.now() < until) {
        this.#reap();
        if (!this.#exit) sys.poll([], 5);
      }
    }
    if (this.#fd >= 0) {
      try {
        sys.close(this.#fd);
      } catch { /* closed */ }
      this.#fd = -1;
    }
  }

  /**
   * After the handover: block until the successor lets this image go (it closes the link at
   * its FINISH, or by exiting), for at most maxMs. Until then this image holds its memory and
   * nothing else: its exit, the teardown of its heap and page tables, then happens once the
   * successor has finished its update, not in its first moments of serving. Never throws.
   */
  awaitRelease(maxMs: number): void {
    if (!this.#handedOver || this.#fd < 0) return;
    const deadline = Date.now() + maxMs;
    try {
      for (;;) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        const [rev] = sys.poll([this.#fd], left);
        if (!rev) continue;
        const p = sys.recvPacket(this.#fd, 65536, GROW);
        if (!p || p.eof) break;
        for (const fd of p.fds) sys.close(fd);
      }
    } catch { /* the link is gone: released */ }
    try {
      sys.close(this.#fd);
    } catch { /* closed */ }
    this.#fd = -1;
  }

  /**
   * The wake set that came with the successor's answer to the fds sent early: an epoll
   * instance it made over every connection sent early, level-triggered, each reported as this
   * image's own number (its registrations cost the successor, in SCHED_IDLE, not this image's
   * event loop: 10 000 of them took 40-60 ms of it). A server parks its idle connections on it
   * (handlers/connection.ts: Parking). None (a successor of an older luo), or not an epoll
   * instance, or a count that is not between 1 and the number of connections sent: no wake
   * set, nothing parked; whatever came is closed.
   */
  #adoptWake(count: unknown, fds: number[], streams: number): void {
    this.#closeWake();
    if (count === undefined && fds.length === 0) return;
    try {
      if (fds.length !== 1 || !Number.isInteger(count) || (count as number) < 1 || (count as number) > streams) throw new Error(`${fds.length} fds for a wake set of ${String(count)} (${streams} connections were sent)`);
      sys.setCloexec(fds[0]!, true);
      this.#wake = sys.ReadySet.adopt(fds[0]!, streams);
      trace(`successor: a wake set of ${streams} connections`);
    } catch (e) {
      for (const f of fds) {
        try {
          sys.close(f);
        } catch { /* closed */ }
      }
      trace(`successor: its wake set is unusable (${(e as Error).message}): nothing parked`);
    }
  }

  /** After presend: the successor's wake set over the connections sent early (null: none). */
  get wakeSet(): sys.ReadySet | null {
    return this.#wake;
  }

  /** Close the wake set (on libuv's thread pool: 10 000 entries are 5-10 ms of the kernel's). */
  #closeWake(): void {
    const w = this.#wake;
    this.#wake = null;
    if (w) void w.closeInBackground();
  }

  /** Kill the successor (if it still runs and has not taken over) and close the link. Idempotent. */
  abort(): void {
    this.#closeWake();
    if (this.#fd >= 0) {
      sys.close(this.#fd);
      this.#fd = -1;
    }
    if (!this.#exit && !this.#handedOver) {
      try {
        process.kill(this.#pid, 'SIGKILL');
      } catch { /* gone */ }
      // Reap it once it is gone (off the event loop's way: a killed process exits within
      // milliseconds, but not at once).
      const giveUp = Date.now() + 10_000;
      const reaper = setInterval(() => {
        this.#reap();
        if (this.#exit || Date.now() > giveUp) clearInterval(reaper);
      }, 10);
      reaper.unref();
    }
  }
}

/** The environment entries that preload luo's guard (LUO_GUARD, NODE_OPTIONS with --import). */
export function guardEnv(env: NodeJS.ProcessEnv, g: Omit<Guard, 'nodeOptions'>, url: string): Record<string, string> {
  const prev = env.NODE_OPTIONS ?? null;
  const spec: Guard = { ...g, nodeOptions: prev };
  return { [GUARD_ENV]: JSON.stringify(spec), NODE_OPTIONS: `--import=${JSON.stringify(url)}${prev ? ` ${prev}` : ''}` };
}

/** Link messages are read whole, whatever their size (a header names every fd it sends). */
const GROW = { grow: true };

const SIGNALS = Object.entries(os.constants.signals) as Array<[NodeJS.Signals, number]>;
const signalName = (n: number): NodeJS.Signals => SIGNALS.find(([, v]) => v === n)?.[0] ?? (`SIG${n}` as NodeJS.Signals);

/**
 * The current image after a handover, right before it exits: close every fd it handed over
 * (at full priority, so that a connection the successor closes is not held open by this
 * process while it exits), then move every thread to SCHED_IDLE (nice 19 where that is
 * refused): the exit's real work, tearing down the V8 heap and the arena's page tables (tens
 * of milliseconds for a GiB of 4 KiB pages), then runs only on CPU time nothing else wants,
 * never in the successor's first moments of serving. Measured: at 1 GB of state the clients'
 * pause was a few milliseconds longer with the teardown at nice 19 (it still took its share).
 * Every thread: Linux schedules threads, and the one that tears the memory down is whichever
 * exits last. Never throws.
 */
export function retire(handedOver: number[]): void {
  try {
    sys.closeFds(handedOver);
  } catch { /* exiting anyway: the kernel closes them */ }
  try {
    sys.idleAllThreads();
  } catch {
    try {
      sys.reniceAllThreads(19);
    } catch { /* not permitted: exit at the normal priority */ }
  }
}

// -------------------------------------------------------------------------------------------
// the successor's side

/** What a successor does with fds sent before the freeze (kho/reboot.ts fills these in). */
export interface SuccessorHooks {
  /** Right before saying hello: the last of the start-up work (the current image freezes
   *  as soon as it hears hello, so anything still starting would be in the pause). */
  beforeHello?: () => void;
  /** fds sent early: the arena's new fd (or -1), the regions preserved so far, every other
   *  fd's new number. Runs before the successor confirms them; throwing is fatal. */
  presend?: (p: { arena: number; regions: Array<[number, number]>; fds: number[]; streams: number[] }) => void;
  /** Preserved regions ([address, size]) the running image wrote for the handover: read them
   *  now, before the freeze. How many were read (a throw counts as none). */
  ahead?: (regions: Array<[number, number]>) => number;
}

export interface Received {
  /** The in-place handover string, rewritten with this process's arena fd. */
  entry: string;
  /** The previous image's fd number → this process's (-1: not handed over). */
  fdMap: Int32Array;
  /** fds sent early and closed again (not carried after all): their numbers may be reused. */
  closedEarly: number[];
  /** The link, still open: closing it lets the previous image exit (Incoming.release). */
  link: number;
  /** The previous image keeps everything until this one commits (commit-v1). */
  commit: boolean;
}

/**
 * Successor, at FINISH of a transaction: ask the previous image to let go ({"commit":1}) and
 * wait for its "committed" (after which it never resumes). 'committed'; 'alone' when the link
 * is gone (the previous image exited: nothing can roll back). ETIMEDOUT when it does not
 * answer within timeoutMs: then nothing is committed, and this image must not make the arena
 * its own (the previous image may still resume).
 */
export function commitToPrevious(link: number, timeoutMs: number): 'committed' | 'alone' {
  try {
    sys.sendPacket(link, encodeMessage({ commit: 1 }));
  } catch {
    return 'alone';
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw fail('ETIMEDOUT', `the previous version did not answer the commit within ${timeoutMs} ms (is it stopped?); nothing was committed`);
    let rev = 0;
    try {
      [rev] = sys.poll([link], left) as [number];
    } catch {
      return 'alone';
    }
    if (!rev) continue;
    let p: sys.Packet | null;
    try {
      p = sys.recvPacket(link, 65536, GROW);
    } catch {
      return 'alone';
    }
    if (!p) continue;
    for (const f of p.fds) sys.close(f);
    if (p.eof) return 'alone';
    try {
      if (parseMessage(p.data, 'answer to the commit').committed === 1) return 'committed';
    } catch { /* not an answer: wait on */ }
  }
}

/** Successor: tell the previous image why this one gives up (best effort; it exits next). */
export function reportFailure(link: number, f: Failure): void {
  try {
    sys.sendPacket(link, encodeMessage({ failed: f.reason, status: f.status, stderr: f.stderr }));
  } catch { /* the link is gone */ }
}

/**
 * Successor, the fds sent early: a wake set for the previous image, which parks its idle HTTP
 * connections on it until the freeze. Every connection sent early, level-triggered, each
 * registered under the previous image's number for it. Made here, in SCHED_IDLE, so that the
 * serving image registers nothing. Null when there are none, or when it cannot be made (the
 * previous image then parks nothing).
 */
function wakeSet(old: number[], mine: number[], streams: number[]): sys.ReadySet | null {
  if (streams.length === 0) return null;
  let set: sys.ReadySet | null = null;
  try {
    set = new sys.ReadySet();
    // (One that closed before its datagram went came as a placeholder, /dev/null: skipped.)
    const at = streams.filter((i) => Number.isInteger(i) && i >= 0 && i < mine.length && i < old.length);
    set.add(at.map((i) => mine[i]!), { keys: at.map((i) => old[i]!) });
    if (set.size === 0) throw new Error('none of them can be polled');
    return set;
  } catch (e) {
    set?.close();
    trace(`successor: no wake set for the previous image (${(e as Error).message})`);
    return null;
  }
}

export function receiveHandover(fd: number, hooks: SuccessorHooks = {}): Received {
  const all: number[] = []; // every fd received, closed if the handover fails
  const dropped = new Set<number>(); // ...except those closed already
  const recv = (): sys.Packet => {
    for (;;) {
      const p = sys.recvPacket(fd, 65536, GROW);
      if (!p) continue;
      if (p.eof) throw new HandoverError('the previous image cancelled the handover (the link closed before it was complete)');
      all.push(...p.fds);
      if (p.fdsTruncated) throw new HandoverError('fds were lost in the handover (SCM_RIGHTS truncated: is the fd limit too low?)');
      return p;
    }
  };
  /** Receive `chunks` datagrams of fds, in order; exactly `count` fds. */
  const takeChunks = (chunks: unknown, count: number, what: string): number[] => {
    const n = checkChunks(chunks, count, sys.MAX_FDS, what);
    const got: number[] = [];
    for (let i = 0; i < n; i++) {
      const p = recv();
      decodeChunk(parseMessage(p.data, `${what} datagram ${i}`), i, what);
      for (const f of p.fds) got.push(f);
    }
    if (got.length !== count) throw new HandoverError(`the ${what} named ${count} fds and ${got.length} arrived`);
    return got;
  };
  const mapOf = (old: number[], size: number): Int32Array => {
    for (const o of old) size = Math.max(size, o + 1);
    return new Int32Array(size).fill(-1);
  };

  try {
    hooks.beforeHello?.();
    try {
      sys.sendPacket(fd, encodeMessage({ luo: HELLO, pid: process.pid, accepts: [PRESEND, COMMIT, ...(hooks.ahead ? [AHEAD] : [])] }));
    } catch (e) {
      throw new HandoverError(`the handover link (fd ${fd}) is unusable: ${(e as Error).message}`);
    }
    // fds sent early, and the old → new map they make (built now, before the freeze).
    let early: { old: number[]; fds: number[]; map: Int32Array } | null = null;
    for (;;) {
      const head = recv();
      const raw = head.data.toString();
      const h = decodeHeader(parseMessage(head.data, 'handover header'), raw);
      if (head.fds.length) throw new HandoverError(`the ${h.luo} header carries ${head.fds.length} fds (only its datagrams {"chunk":i} may)`);
      if (h.luo === PRESEND) {
        if (early) throw new HandoverError('fds were sent early twice');
        const fds = takeChunks(h.chunks, h.fds.length, 'presend');
        const map = mapOf(h.fds, 0);
        for (let i = 0; i < h.fds.length; i++) {
          if (map[h.fds[i]!] !== -1) throw new HandoverError(`fd ${h.fds[i]} was sent early twice`);
          map[h.fds[i]!] = fds[i]!;
        }
        const ai = h.fds.indexOf(h.arena);
        hooks.presend?.({ arena: ai >= 0 ? fds[ai]! : -1, regions: h.regions, fds: fds.filter((_, i) => i !== ai), streams: h.streams.filter((i) => i !== ai).map((i) => fds[i]!) });
        early = { old: h.fds, fds, map };
        const wake = wakeSet(h.fds, fds, h.streams);
        try {
          sys.sendPacket(fd, encodeMessage({ presented: fds.length, ...(wake ? { wake: wake.size } : {}) }), wake ? [wake.fd] : undefined);
        } finally {
          wake?.close(); // the previous image holds it now (or never will)
        }
        continue;
      }
      if (h.luo === AHEAD) {
        let n = 0;
        try {
          n = hooks.ahead?.(h.regions) ?? 0;
        } catch { /* none read: the tables read them at boot */ }
        sys.sendPacket(fd, encodeMessage({ read: n }));
        continue;
      }
      const got = takeChunks(h.chunks, h.fds.length, 'handover');
      const spare: number[] = [];
      let fdMap: Int32Array;
      let count: number;
      if (h.luo === HANDOVER_V2) {
        // The early map, minus the copies not carried after all, plus the delta.
        if (!early) throw new HandoverError('a handover-v2 came without fds sent early');
        fdMap = mapOf(h.fds, early.map.length);
        if (fdMap.length === early.map.length) fdMap = early.map;
        else fdMap.set(early.map);
        count = early.fds.length;
        for (const i of h.closed as unknown[]) {
          if (!Number.isInteger(i) || (i as number) < 0 || (i as number) >= early.fds.length) throw new HandoverError(`the handover closes early fd #${String(i)}, which was not sent`);
          const o = early.old[i as number]!;
          if (fdMap[o] === -1) throw new HandoverError(`the handover closes early fd #${String(i)} twice`);
          fdMap[o] = -1;
          spare.push(early.fds[i as number]!);
          count--;
        }
      } else {
        fdMap = mapOf(h.fds, 0);
        count = 0;
        // An image that sent fds early and then everything again: the early copies are spare.
        if (early) spare.push(...early.fds);
      }
      for (let i = 0; i < h.fds.length; i++) {
        if (fdMap[h.fds[i]!] !== -1) throw new HandoverError(`the handover names fd ${h.fds[i]} twice`);
        fdMap[h.fds[i]!] = got[i]!;
        count++;
      }
      let entry: string;
      const arenaOld = /^[^:]*:(\d+):/.exec(h.entry);
      const arena = arenaOld && Number(arenaOld[1]) < fdMap.length ? fdMap[Number(arenaOld[1])]! : -1;
      if (!arenaOld) throw new HandoverError(`the handover string ${JSON.stringify(h.entry)} is malformed`);
      if (arena < 0) throw new HandoverError(`the arena fd ${arenaOld[1]} was not among the fds handed over`);
      try {
        entry = withArenaFd(h.entry, arena);
      } catch (e) {
        throw new HandoverError(`the handover string ${JSON.stringify(h.entry)} is malformed: ${(e as Error).message}`);
      }
      // Everything checked: drop the early copies that are not carried after all.
      for (const f of spare) {
        dropped.add(f);
        sys.closeFd(f);
      }
      sys.sendPacket(fd, encodeMessage({ taken: count }));
      return { entry, fdMap, closedEarly: spare, link: fd, commit: h.commit };
    }
  } catch (e) {
    for (const f of all) {
      if (dropped.has(f)) continue;
      try {
        sys.closeFd(f);
      } catch { /* closed already */ }
    }
    if (e instanceof HandoverError) throw e;
    throw new HandoverError(`the handover failed: ${(e as Error).message}`);
  }
}
