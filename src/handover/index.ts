/*
 * handover: how the next image gets the arena and the carried fds. One interface, two
 * transports: exec (in place, same pid: exec.ts) and successor (a pre-started process, over a
 * Unix socket: successor.ts). Luo.reboot opens a transport; boot receives through receive().
 * Nothing else knows which transport runs.
 *
 * Outgoing (this image), for a Transport:
 *   openTransport(kind, image)  successor: the next image is started now (a program that
 *                               cannot be run fails here, as an exec would)
 *   → begin(early)              before the freeze, still serving: successor: wait until it is
 *                               ready, send what can go early; exec: nothing. Rejects, having
 *                               given nothing up: the caller cancels.
 *   → handOver(entry, refs)     after the freeze, the point of no return: exec never returns;
 *                               successor returns once it has taken everything. Throws, having
 *                               given nothing up (the successor is killed): the caller cancels.
 *   → retire()                  successor: close what was handed over, wait for its FINISH,
 *                               exit. Never returns.
 *   abort()                     before handOver: the next image is killed, never serves.
 * Incoming (the next image): receive() reads LUO_HANDOVER (and removes it), waits for a
 * successor's handover, and returns what arrived (incoming.ts), or null on a cold boot.
 * HandoverError when what arrived is malformed.
 */
import fs from 'node:fs';
import { trace } from '../config.js';
import { HandoverError } from '../errors.js';
import * as sys from '../sys/index.js';
import {
  HANDOVER_ENV, ROLLBACK_ENV, decodeFailure, guardOf, parseHandoverEnv, parseKhoEntry, type Failure, type HandoverEnv,
} from '../uapi/handover.js';
import { execInPlace, reapInheritedChildren } from './exec.js';
import { Incoming, type Readiness } from './incoming.js';
import { Successor, guardEnv, receiveHandover, retire, type FdRef, type Flat, type Outcome } from './successor.js';
import type { Image } from './image.js';

export { Incoming, readyMarks, translateCells } from './incoming.js';
export { earlyDelta } from './successor.js';
export { selfImage, resolveExecutable, type Image } from './image.js';
export type { FdRef, Flat, Outcome } from './successor.js';

export type TransportKind = 'exec' | 'successor';

/** What can go to a successor before the freeze. */
export interface EarlyFds {
  arena: FdRef;
  /** Memory preserved so far, [address, size]: a hint for mapping ahead. */
  regions: Array<[number, number]>;
  refs: FdRef[];
}

export interface HandedOver {
  /** The process that serves now (this one's pid after an exec, which never gets here). */
  pid: number;
  /** Block until the next version commits (its FINISH) or fails; a failed one is dead when
   *  this returns, and this image may resume. */
  outcome(): Outcome;
  /** After the commit: close what was handed over, lower every thread, exit. */
  retire(): never;
}

export interface Transport {
  readonly kind: TransportKind;
  /** The process that will serve the next version (this one, in place). */
  readonly pid: number;
  begin(early: () => Promise<EarlyFds | null>): Promise<void>;
  /** After begin: the next image reads memory of the handover before the freeze (ahead-v1). */
  readonly readsAhead: boolean;
  /** After begin: a successor's wake set over the connections sent early (each reported as
   *  this image's number for it), on which servers park their idle connections until the
   *  freeze; null when there is none (in place; a successor of an older luo). abort() closes it. */
  readonly wakeSet: sys.ReadySet | null;
  /** Still serving, before the freeze: have the next image read these preserved regions now
   *  (each [address, size], written for the handover and not changed again). Resolves with
   *  how many it read; rejects, having given nothing up, when it fails (it is killed). */
  ahead(regions: Array<[number, number]>): Promise<number>;
  /** Right before the freeze: the next image gets ready to serve (a successor that prepared
   *  in SCHED_IDLE gets the normal class back). Throws, having given nothing up, if it cannot. */
  beforeFreeze(): void;
  /** `flat`: refs' fds as flat arrays (Files.carriedFlat, aligned with refs), so that a
   *  successor's delta is found without reading each ref. */
  handOver(entry: string | null, refs: FdRef[], beforeExec?: () => void, flat?: Flat | null): HandedOver;
  abort(): void;
}

export interface TransportOptions {
  /** Successor: how long it may take to start and say it is ready (its Node start-up). */
  readyTimeoutMs: number;
  /** Successor: how long it may take to take the handover once this image has frozen. */
  freezeTimeoutMs: number;
  /** How long the next version has, from the handover, to commit (its FINISH): past that it is
   *  rolled back. */
  commitTimeoutMs: number;
  /** In place: how long the next image has to be up (its control device started). */
  upTimeoutMs?: number;
  /** Successor: it prepares in SCHED_IDLE where it can be given its class back (config). */
  successorIdle?: boolean;
}

/** After a successor handover, how long this image waits for the successor's FINISH before
 *  it exits anyway (it holds nothing but its memory meanwhile). */
const RELEASE_WAIT_MS = 5000;

export function openTransport(kind: TransportKind, image: Image, opts: TransportOptions): Transport {
  return kind === 'successor' ? successorTransport(image, opts) : execTransport(image, opts);
}

/**
 * luo's guard (handover/guard.ts, bundled as dist/bundle/guard.js): preloaded into a next
 * image, it brings the previous version back if that image fails before FINISH. Null when
 * this copy of luo has no bundle (then the next image is not guarded).
 */
export function guardUrl(): string | null {
  for (const rel of ['./guard.js', '../../bundle/guard.js', '../bundle/guard.js']) {
    const u = new URL(rel, import.meta.url);
    if (u.pathname.endsWith('/bundle/guard.js') && fs.existsSync(u)) return u.href;
  }
  return null;
}

function execTransport(image: Image, opts: TransportOptions): Transport {
  return {
    kind: 'exec',
    pid: process.pid,
    begin: async () => {},
    readsAhead: false,
    wakeSet: null,
    ahead: async () => 0,
    beforeFreeze: () => {},
    handOver(entry, refs, beforeExec) {
      const url = entry ? guardUrl() : null;
      const now = Date.now();
      const env = url ? guardEnv(image.env ?? process.env, { mode: 'exec', deadline: now + opts.commitTimeoutMs, upBy: now + (opts.upTimeoutMs ?? opts.commitTimeoutMs), entry }, url) : {};
      return execInPlace(entry, image, { keepFds: refs.map((r) => r.fd), beforeExec, env });
    },
    abort() {},
  };
}

function successorTransport(image: Image, opts: TransportOptions): Transport {
  const url = guardUrl();
  trace('successor: starting');
  const next = Successor.start(image, { guard: url ? { url, deadline: 0 } : null, idle: opts.successorIdle ?? false });
  trace('successor: started');
  return {
    kind: 'successor',
    get pid() {
      return next.pid ?? 0;
    },
    async begin(early) {
      await next.ready(opts.readyTimeoutMs);
      trace('successor: ready');
      if (!next.acceptsPresend) return;
      const e = await early();
      if (!e) return;
      // Still serving: send the arena and every fd that will not change before the freeze, so
      // that only what did change crosses in the pause (and the successor maps the arena now).
      await next.presend([e.arena, ...e.refs], { arenaFd: e.arena.fd, regions: e.regions }, opts.readyTimeoutMs);
      trace(`successor: ${e.refs.length + 1} fds sent early`);
      // The successor's work on them (a full collection, on every core it can get) may have
      // kept this image from answering: answer what queued meanwhile (one loop turn with a
      // poll) before freezing, so that wait does not run into the pause.
      await new Promise((r) => setImmediate(() => setImmediate(r)));
    },
    get readsAhead() {
      return next.acceptsAhead;
    },
    get wakeSet() {
      return next.wakeSet;
    },
    ahead: (regions) => next.ahead(regions, opts.readyTimeoutMs),
    beforeFreeze: () => next.restorePriority(),
    handOver(entry, refs, beforeExec, flat) {
      if (entry === null) throw new HandoverError('a successor needs a handover');
      beforeExec?.();
      next.handover(entry, refs, opts.freezeTimeoutMs, flat ?? null);
      trace('handover: taken');
      const deadline = Date.now() + opts.commitTimeoutMs;
      return {
        pid: next.pid ?? 0,
        // A successor of an older luo (no commit-v1) owns everything once it has taken it.
        outcome: () => (next.acceptsCommit ? next.awaitOutcome(deadline) : { committed: true }),
        retire(): never {
          retire(refs.map((r) => r.fd));
          // An older successor closes the link at its FINISH: exit then, not while it serves its
          // first requests (the exit's teardown would compete with them). One that committed
          // has finished already.
          if (!next.acceptsCommit) next.awaitRelease(RELEASE_WAIT_MS);
          process.exit(0);
        },
      };
    },
    abort: () => next.abort(),
  };
}

/** What boot() will find, without receiving anything: 'successor', 'exec' or null. */
export function pendingKind(env: NodeJS.ProcessEnv = process.env): TransportKind | null {
  try {
    return parseHandoverEnv(env[HANDOVER_ENV])?.kind ?? null;
  } catch {
    return null;
  }
}

export interface ReceiveHooks {
  /** Successor: right before it says it is ready (the previous image freezes when it hears
   *  that): finish whatever is still starting up. */
  beforeHello?: () => void;
  /** Successor: the fds sent before the freeze arrived: the arena's new fd (-1: none) and the
   *  regions preserved so far. Map it now, while the previous image still serves. */
  presend?: (early: { arena: number; regions: Array<[number, number]> }) => void;
  /** Successor: the connections among the fds sent early (this process's numbers): build
   *  their sockets now, not in the pause. */
  prebuild?: (fds: number[]) => void;
  /** Successor: then settle what would otherwise land in the pause (luo collects garbage). */
  settle?: () => void;
  /** Successor, before the freeze: preserved regions the previous image wrote for the
   *  handover ([address, size]); read them now. How many were read. */
  ahead?: (regions: Array<[number, number]>) => number;
}

/**
 * Read LUO_HANDOVER (and remove it from the environment: children and later images must not
 * see a stale one) and take what the previous image handed over. Null on a cold boot.
 */
export function receive(env: NodeJS.ProcessEnv = process.env, hooks: ReceiveHooks = {}): Incoming | null {
  const value = env[HANDOVER_ENV];
  delete env[HANDOVER_ENV];
  const h: HandoverEnv | null = parseHandoverEnv(value);
  if (!h) return null;
  if (h.kind === 'exec') {
    parseKhoEntry(h.entry);
    // After an in-place exec this pid's children are the previous image's.
    reapInheritedChildren();
    const back = env[ROLLBACK_ENV];
    delete env[ROLLBACK_ENV];
    let rolledBack: Failure | null = null;
    if (back !== undefined) {
      try {
        rolledBack = decodeFailure(JSON.parse(back) as Record<string, unknown>);
      } catch {
        rolledBack = { reason: 'the next version failed (its guard gave no reason)', status: null, stderr: [] };
      }
    }
    return new Incoming('exec', h.entry, { guard: rolledBack ? null : guardOf(), rolledBack });
  }
  // A successor: the previous image is still running; wait here for what it hands over.
  let readiness: Readiness | null = null;
  try {
    const got = receiveHandover(h.link, {
      beforeHello: hooks.beforeHello,
      presend: ({ arena, regions, fds, streams }) => {
        trace(`successor: ${fds.length + (arena >= 0 ? 1 : 0)} fds sent early`);
        hooks.presend?.({ arena, regions });
        readiness = watchForInput(fds);
        if (hooks.prebuild && streams.length) {
          hooks.prebuild(streams);
          trace(`successor: ${streams.length} sockets built`);
        }
        hooks.settle?.();
        trace('successor: arena mapped, fds watched, settled');
      },
      ahead: hooks.ahead ? (regions) => {
        const n = hooks.ahead!(regions);
        trace(`successor: read ahead ${n} of ${regions.length} regions`);
        return n;
      } : undefined,
    });
    trace('successor: handover received');
    const r = readiness as Readiness | null;
    // Early copies closed again: their numbers may be reused, so they are not watched.
    if (r) for (const f of got.closedEarly) if (f < r.watched.length) r.watched[f] = 0;
    sys.setCloexec(got.link, true); // fd 3 came without it: a later exec must not inherit it
    return new Incoming('successor', got.entry, { map: got.fdMap, readiness: r, link: got.link, commit: got.commit, guard: guardOf() });
  } catch (e) {
    (readiness as Readiness | null)?.set.close();
    throw e;
  }
}

/**
 * Give up an in-place handover this image will not use (a cold boot after a corrupt one):
 * close everything the previous image carried, so that nothing of it stays open (a carried
 * listener would make this image's own listen() fail with EADDRINUSE). That is every fd above
 * stdio that is not close-on-exec (the previous image marked all others so before its exec),
 * the ones named in `also`, and, unless `keepArena`, the arena. The guard, if any, stands
 * down: there is nothing to roll back to that could boot from this handover either. Returns
 * how many were closed.
 */
export function discard(entry: string | undefined, opts: { also?: Iterable<number>; keepArena?: boolean } = {}): number {
  const arena = Number(/^[^:]*:(\d+):/.exec(entry ?? '')?.[1]);
  const close = new Set<number>(opts.also ?? []);
  for (const fd of sys.openFds()) {
    try {
      if (fd > 2 && !sys.isCloexec(fd)) close.add(fd);
    } catch { /* the directory fd readdir used */ }
  }
  if (Number.isInteger(arena) && arena > 2) {
    if (opts.keepArena) close.delete(arena);
    else {
      try {
        if (sys.fdTarget(arena).startsWith('/memfd:luo-arena')) close.add(arena);
      } catch { /* already gone */ }
    }
  }
  let n = 0;
  for (const fd of close) {
    if (fd <= 2) continue;
    try {
      sys.closeFd(fd);
      n++;
    } catch { /* closed already */ }
  }
  void guardOf()?.commit();
  return n;
}

/**
 * A readiness set over the fds sent early, so that after the handover the few with input
 * waiting are found without polling every one. Only a hint: if it cannot be made (epoll
 * limits), the successor polls instead.
 */
function watchForInput(fds: number[]): Readiness | null {
  let set: sys.ReadySet | null = null;
  try {
    set = new sys.ReadySet();
    set.add(fds, { oneShot: true });
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
