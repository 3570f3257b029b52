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
import { trace } from '../config.js';
import { HandoverError } from '../errors.js';
import * as sys from '../sys/index.js';
import { HANDOVER_ENV, parseHandoverEnv, parseKhoEntry, type HandoverEnv } from '../uapi/handover.js';
import { execInPlace, reapInheritedChildren } from './exec.js';
import { Incoming, type Readiness } from './incoming.js';
import { Successor, receiveHandover, retire, type FdRef } from './successor.js';
import type { Image } from './image.js';

export { Incoming } from './incoming.js';
export { selfImage, resolveExecutable, type Image } from './image.js';
export type { FdRef } from './successor.js';

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
  /** Close what was handed over, wait for the next image's FINISH (bounded), exit. */
  retire(): never;
}

export interface Transport {
  readonly kind: TransportKind;
  begin(early: () => EarlyFds | null): Promise<void>;
  handOver(entry: string | null, refs: FdRef[], beforeExec?: () => void): HandedOver;
  abort(): void;
}

export interface TransportOptions {
  /** Successor: how long it may take to be ready, and to take the handover. */
  timeoutMs: number;
}

/** After a successor handover, how long this image waits for the successor's FINISH before
 *  it exits anyway (it holds nothing but its memory meanwhile). */
const RELEASE_WAIT_MS = 5000;

export function openTransport(kind: TransportKind, image: Image, opts: TransportOptions): Transport {
  return kind === 'successor' ? successorTransport(image, opts) : execTransport(image);
}

function execTransport(image: Image): Transport {
  return {
    kind: 'exec',
    begin: async () => {},
    handOver(entry, refs, beforeExec) {
      return execInPlace(entry, image, { keepFds: refs.map((r) => r.fd), beforeExec });
    },
    abort() {},
  };
}

function successorTransport(image: Image, opts: TransportOptions): Transport {
  const next = Successor.start(image);
  return {
    kind: 'successor',
    async begin(early) {
      await next.ready(opts.timeoutMs);
      trace('successor: ready');
      if (!next.acceptsPresend) return;
      const e = early();
      if (!e) return;
      // Still serving: send the arena and every fd that will not change before the freeze, so
      // that only what did change crosses in the pause (and the successor maps the arena now).
      await next.presend([e.arena, ...e.refs], { arenaFd: e.arena.fd, regions: e.regions }, opts.timeoutMs);
      trace(`successor: ${e.refs.length + 1} fds sent early`);
      // The successor's work on them (a full collection, on every core it can get) may have
      // kept this image from answering: answer what queued meanwhile (one loop turn with a
      // poll) before freezing, so that wait does not run into the pause.
      await new Promise((r) => setImmediate(() => setImmediate(r)));
    },
    handOver(entry, refs, beforeExec) {
      if (entry === null) throw new HandoverError('a successor needs a handover');
      beforeExec?.();
      next.handover(entry, refs, opts.timeoutMs);
      trace('handover: taken');
      return {
        pid: next.pid ?? 0,
        retire(): never {
          retire(refs.map((r) => r.fd));
          // Exit once the successor has finished its update (it closes the link at FINISH), not
          // while it serves its first requests: the exit's teardown would compete with them.
          next.awaitRelease(RELEASE_WAIT_MS);
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
  /** Successor: then settle what would otherwise land in the pause (luo collects garbage). */
  settle?: () => void;
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
    return new Incoming('exec', h.entry);
  }
  // A successor: the previous image is still running; wait here for what it hands over.
  let readiness: Readiness | null = null;
  try {
    const got = receiveHandover(h.link, {
      beforeHello: hooks.beforeHello,
      presend: ({ arena, regions, fds }) => {
        trace(`successor: ${fds.length + (arena >= 0 ? 1 : 0)} fds sent early`);
        hooks.presend?.({ arena, regions });
        readiness = watchForInput(fds);
        hooks.settle?.();
        trace('successor: arena mapped, fds watched, settled');
      },
    });
    trace('successor: handover received');
    const r = readiness as Readiness | null;
    // Early copies closed again: their numbers may be reused, so they are not watched.
    if (r) for (const f of got.closedEarly) if (f < r.watched.length) r.watched[f] = 0;
    sys.setCloexec(got.link, true); // fd 3 came without it: a later exec must not inherit it
    return new Incoming('successor', got.entry, got.fdMap, r, got.link);
  } catch (e) {
    (readiness as Readiness | null)?.set.close();
    throw e;
  }
}

/**
 * Give up an in-place handover this image will not use (a cold boot after a corrupt one):
 * close the arena it carried, so that nothing of the previous image stays open.
 */
export function discard(entry: string | undefined): void {
  const fd = Number(/^[^:]*:(\d+):/.exec(entry ?? '')?.[1]);
  if (!Number.isInteger(fd) || fd <= 2) return;
  try {
    if (sys.fdTarget(fd).startsWith('/memfd:luo-arena')) sys.close(fd);
  } catch { /* already gone */ }
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
