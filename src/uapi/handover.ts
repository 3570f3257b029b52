/*
 * uapi/handover: the formats between two images of one service, as a contract (the control
 * device's are in protocol.ts; the handover trees' compatible strings in luo/abi.ts and
 * connections.ts). Pure: no I/O. docs/kho.md and docs/lifecycle.md are the prose.
 *
 * LUO_HANDOVER, the one environment variable an image reads to learn it was handed over:
 *   "kho-v1:<arena fd>:<root address>:<root size>"   after an in-place exec: the arena is
 *                                                     open at that fd, the KHO root tree at
 *                                                     that address (hex 0x… or decimal)
 *   "successor:<link fd>"                             a pre-started successor: the running
 *                                                     image hands over on that socket
 *
 * The successor link: SOCK_SEQPACKET, one JSON object per datagram, fds as SCM_RIGHTS, at
 * most MAX_FDS per datagram, and only in {"chunk":i} datagrams (and the wake set, below).
 * In order:
 *   successor → current  hello      {"luo":"successor-v1","pid":P,"accepts":["presend-v1"]}
 *   presend-v1 (only when the successor accepts it; the current image still serves):
 *   current → successor  presend    {"luo":"presend-v1","fds":[…],"chunks":N,"arena":A,
 *                                    "regions":[[addr,size],…],"streams":[i,…]} then N
 *                                    chunks; `streams` (optional) lists, by index, the fds
 *                                    that are connections (the successor may build their
 *                                    sockets now)
 *   successor → current  presented  {"presented":n} or {"presented":n,"wake":w} with one
 *                                    fd: the wake set, an epoll instance over w of the
 *                                    connections sent early (1 <= w <= their count),
 *                                    level-triggered, each registered with the current
 *                                    image's number for it as its data; the current image
 *                                    polls it while its idle connections are parked. An
 *                                    image that does not know `wake` closes the fd; one that
 *                                    gets anything else with `presented` closes it and
 *                                    parks nothing
 *   ahead-v1 (only when the successor accepts it; after the presend, still serving):
 *   current → successor  ahead      {"luo":"ahead-v1","regions":[[addr,size],…]}: preserved
 *                                    memory the current image wrote for the handover and
 *                                    will not change again (a server's base block of idle
 *                                    connections): the successor reads it now, not in the
 *                                    pause. A successor that accepts ahead-v1 reads tables
 *                                    that name such a block (connections table v3)
 *   successor → current  read       {"read":n}            n of the regions read (a region it
 *                                    could not read is read at boot, and refused there if bad)
 *   at FREEZE, without a presend:
 *   current → successor  handover   {"luo":"handover-v1","entry":E,"fds":[…],"chunks":N}
 *   at FREEZE, after a presend:
 *   current → successor  handover   {"luo":"handover-v2","entry":E,"fds":[…],"chunks":N,
 *                                    "closed":[i,…]}: only the fds not sent early; `closed`
 *                                    lists early ones (by index) not carried after all
 *   successor → current  taken      {"taken":count}
 * E is the kho-v1 entry with the current image's fd numbers; `fds` lists those numbers, and
 * the successor receives each under a new one. An image that does not know `accepts` sends
 * handover-v1; a successor that does not say it gets handover-v1.
 * commit-v1 (when the successor accepts it, the handover header says "commit":true): after
 * "taken" the current image keeps everything and waits; the update is a transaction until
 * the successor's FINISH:
 *   successor → current  commit     {"commit":1}          at FINISH: may it make the arena its own?
 *   current → successor  committed  {"committed":1}       yes: the current image will not resume;
 *                                                         it exits. Only then does the successor
 *                                                         write its pages back (arena.ts)
 *   successor → current  failed     {"failed":why,"status":n|null,"stderr":[lines]}
 *                                                         it is giving up (its guard says why)
 * The link closing (the successor died) or no commit by the deadline: the current image
 * kills it, cancels and serves again. Without commit-v1 the link closing is the release, as
 * before.
 *
 * LUO_GUARD, set by luo for a next image it starts (exec or successor) together with
 * NODE_OPTIONS=--import=<guard>: {"mode":"exec"|"successor","deadline":ms since the epoch
 * (committed by then),"upBy":ms since the epoch (its control device started by then),
 * "entry":E (exec: the handover, to hand back to the previous image),"nodeOptions":the
 * NODE_OPTIONS to restore (null: unset)}. The guard removes both at once.
 * LUO_ROLLBACK, set by a guard for the previous image it brings back in place:
 * {"reason":text,"status":n|null,"stderr":[lines]}.
 *
 * Decoders take whatever JSON.parse gave and return the typed message or throw a
 * HandoverError naming what is wrong: nothing malformed gets past them.
 */
import { HandoverError } from '../errors.js';

export const HANDOVER_ENV = 'LUO_HANDOVER';
export const KHO_ENTRY = 'kho-v1';
export const SUCCESSOR_PREFIX = 'successor:';
/** The fd a successor finds its end of the link on. */
export const SUCCESSOR_FD = 3;
/** fd numbers above this are refused in a handover (Linux's nr_open is at most 2^20 by default). */
export const MAX_FD_NUMBER = 2 ** 22;

export interface KhoEntry { arenaFd: number; rootAddr: number; rootSize: number }

export function formatKhoEntry(e: KhoEntry): string {
  return `${KHO_ENTRY}:${e.arenaFd}:0x${e.rootAddr.toString(16)}:${e.rootSize}`;
}

/** The entry's fields; HandoverError when it is not a kho-v1 entry. Ranges are checked by KHO. */
export function parseKhoEntry(entry: string): KhoEntry {
  const m = /^kho-v1:(\d+):(0x[0-9a-f]+|\d+):(\d+)$/i.exec(entry);
  if (!m) {
    const v = /^([^:]*):/.exec(entry)?.[1];
    if (v && v !== KHO_ENTRY) throw new HandoverError(`${HANDOVER_ENV} is for "${v}", this image understands "${KHO_ENTRY}"`);
    throw new HandoverError(`${HANDOVER_ENV}=${JSON.stringify(entry)} is not "kho-v1:<fd>:<root address>:<root size>"`);
  }
  return { arenaFd: Number(m[1]), rootAddr: Number(m[2]), rootSize: Number(m[3]) };
}

/** The same entry with another arena fd (a successor received the arena under a new number). */
export function withArenaFd(entry: string, fd: number): string {
  return formatKhoEntry({ ...parseKhoEntry(entry), arenaFd: fd });
}

export type HandoverEnv = { kind: 'exec'; entry: string } | { kind: 'successor'; link: number };

/** What LUO_HANDOVER says: null when unset or empty. HandoverError when malformed. */
export function parseHandoverEnv(v: string | undefined): HandoverEnv | null {
  if (v === undefined || v === '') return null;
  if (!v.startsWith(SUCCESSOR_PREFIX)) return { kind: 'exec', entry: v };
  const fd = Number(v.slice(SUCCESSOR_PREFIX.length));
  if (!Number.isInteger(fd) || fd < 3) throw new HandoverError(`${HANDOVER_ENV}=${JSON.stringify(v)} does not name a link fd`);
  return { kind: 'successor', link: fd };
}

// -------------------------------------------------------------------------------------------
// the successor link

export const HELLO = 'successor-v1';
export const PRESEND = 'presend-v1';
export const HANDOVER_V1 = 'handover-v1';
export const HANDOVER_V2 = 'handover-v2';
export const COMMIT = 'commit-v1';
export const AHEAD = 'ahead-v1';
export const GUARD_ENV = 'LUO_GUARD';
export const ROLLBACK_ENV = 'LUO_ROLLBACK';

export interface Hello { luo: typeof HELLO; pid: number; accepts: string[] }
/** `streams`: indices into `fds` of the connections among them. */
export interface Presend { luo: typeof PRESEND; fds: number[]; chunks: number; arena: number; regions: Array<[number, number]>; streams: number[] }
/** Preserved regions, [address, size], for the successor to read before the freeze. */
export interface Ahead { luo: typeof AHEAD; regions: Array<[number, number]> }
export interface HandoverMsg { luo: typeof HANDOVER_V1 | typeof HANDOVER_V2; entry: string; fds: number[]; chunks: number; closed: number[]; commit: boolean }
export interface Chunk { chunk: number }
/** `wake`: how many connections the wake set sent with it covers (absent: none sent). */
export interface Presented { presented: number; wake?: number }
export interface Taken { taken: number }
/** Why a next image gave up (its guard's last word), or why a previous one came back. */
export interface Failure { reason: string; status: number | null; stderr: string[] }
export interface Guard {
  mode: 'exec' | 'successor';
  /** ms since the epoch: the image must have committed (FINISH) by then. */
  deadline: number;
  /** ms since the epoch: the image must be up (its control device started) by then. */
  upBy: number;
  entry: string | null;
  nodeOptions: string | null;
}
/** What the current image can receive after a handover's header. */
export type Header = Presend | Ahead | HandoverMsg;

const isFdNumber = (x: unknown): x is number => Number.isInteger(x) && (x as number) >= 0 && (x as number) < MAX_FD_NUMBER;
const isObject = (m: unknown): m is Record<string, unknown> => m !== null && typeof m === 'object' && !Array.isArray(m);

/** One datagram's JSON object; HandoverError when it is not one. */
export function parseMessage(data: Uint8Array, what: string): Record<string, unknown> {
  const text = Buffer.from(data.buffer, data.byteOffset, data.length).toString();
  try {
    const m = JSON.parse(text) as unknown;
    if (isObject(m)) return m;
  } catch { /* below */ }
  throw new HandoverError(`the ${what} is not a JSON object: ${text.slice(0, 120)}`);
}

export const encodeMessage = (m: object): Buffer => Buffer.from(JSON.stringify(m));

/** The successor's hello. `accepts` is optional (images from before presend-v1 omit it). */
export function decodeHello(m: Record<string, unknown>): Hello {
  if (m.luo !== HELLO) throw new HandoverError(`the successor said ${JSON.stringify(m).slice(0, 80)}, not hello`);
  const accepts = Array.isArray(m.accepts) ? m.accepts.filter((x): x is string => typeof x === 'string') : [];
  return { luo: HELLO, pid: Number.isInteger(m.pid) ? (m.pid as number) : 0, accepts };
}

/** A presend or handover header (the successor's side). */
export function decodeHeader(m: Record<string, unknown>, raw: string): Header {
  const malformed = (): never => {
    throw new HandoverError(`the handover header is malformed: ${raw.slice(0, 120)}`);
  };
  const regionsOf = (v: unknown): Array<[number, number]> => (Array.isArray(v)
    ? (v as unknown[]).filter((r): r is [number, number] => Array.isArray(r) && r.length === 2 && r.every((x) => Number.isSafeInteger(x) && (x as number) >= 0))
    : []);
  if (m.luo === AHEAD) {
    if (!Array.isArray(m.regions)) throw new HandoverError('the ahead message has no "regions" list');
    return { luo: AHEAD, regions: regionsOf(m.regions) };
  }
  if (m.luo === PRESEND) {
    if (!Array.isArray(m.fds) || !m.fds.every(isFdNumber)) throw new HandoverError('the presend header has no valid fd list');
    const regions = regionsOf(m.regions);
    const n = (m.fds as number[]).length;
    const streams = Array.isArray(m.streams) ? (m.streams as unknown[]).filter((i): i is number => Number.isInteger(i) && (i as number) >= 0 && (i as number) < n) : [];
    return { luo: PRESEND, fds: m.fds as number[], chunks: m.chunks as number, arena: Number.isInteger(m.arena) ? (m.arena as number) : -1, regions, streams };
  }
  if (m.luo !== HANDOVER_V1 && m.luo !== HANDOVER_V2) return malformed();
  if (typeof m.entry !== 'string' || !Array.isArray(m.fds) || !m.fds.every(isFdNumber)) return malformed();
  let closed: number[] = [];
  if (m.luo === HANDOVER_V2) {
    if (!Array.isArray(m.closed)) throw new HandoverError('the handover header has no "closed" list');
    closed = m.closed as number[];
  }
  return { luo: m.luo, entry: m.entry, fds: m.fds as number[], chunks: m.chunks as number, closed, commit: m.commit === true };
}

/** A failure as a guard reports it ({"failed":…} on the link, LUO_ROLLBACK in place). */
export function decodeFailure(m: Record<string, unknown>): Failure {
  const reason = typeof m.failed === 'string' ? m.failed : typeof m.reason === 'string' ? m.reason : 'no reason given';
  const status = Number.isInteger(m.status) ? (m.status as number) : null;
  const stderr = Array.isArray(m.stderr) ? m.stderr.filter((l): l is string => typeof l === 'string').slice(-20) : [];
  return { reason: reason.slice(0, 2000), status, stderr: stderr.map((l) => l.slice(0, 500)) };
}

/** LUO_GUARD's value; null when it is malformed (a guard then does nothing). */
export function decodeGuard(v: string | undefined): Guard | null {
  if (!v) return null;
  try {
    const m = JSON.parse(v) as Record<string, unknown>;
    if ((m.mode !== 'exec' && m.mode !== 'successor') || typeof m.deadline !== 'number') return null;
    return {
      mode: m.mode, deadline: m.deadline, upBy: typeof m.upBy === 'number' ? m.upBy : m.deadline, entry: typeof m.entry === 'string' ? m.entry : null,
      nodeOptions: typeof m.nodeOptions === 'string' ? m.nodeOptions : null,
    };
  } catch {
    return null;
  }
}

/** The number of chunk datagrams a header may announce for `count` fds; HandoverError otherwise. */
export function checkChunks(chunks: unknown, count: number, maxFds: number, what: string): number {
  if (!Number.isInteger(chunks) || (chunks as number) < 0 || (chunks as number) > Math.ceil(count / maxFds)) {
    throw new HandoverError(`the ${what} announces ${String(chunks)} datagrams for ${count} fds`);
  }
  return chunks as number;
}

/** A chunk datagram's index. */
export function decodeChunk(m: Record<string, unknown>, i: number, what: string): void {
  if (m.chunk !== i) throw new HandoverError(`the ${what} datagram ${i} arrived as ${JSON.stringify(m.chunk)}`);
}

/**
 * The guard, as the luo of the image it guards sees it: globalThis[GUARD_KEY] (a registered
 * symbol, so that a guard and a luo from different copies of the package meet).
 */
export const GUARD_KEY = Symbol.for('luo.guard');

export interface GuardHandle {
  readonly version: 1;
  readonly mode: 'exec' | 'successor';
  /** Until commit(): a failure of this image brings the previous version back (exec) or tells
   *  it (successor), which resumes. */
  readonly armed: boolean;
  /** The image is up: its control device serves (an agent can drive it to FINISH). */
  up(): void;
  /** Exec mode: the shared words its control device's first thread uses (uapi/device-words.ts),
   *  which the guard's watchdog reads to say where a hung image's device stood. */
  readonly deviceWords?: SharedArrayBuffer;
  /** Why the image is about to give up, in its own words (luo's panic says it here). */
  note(reason: string): void;
  /** FINISH: the update is done; nothing is guarded any more (resolves once the guard's
   *  thread, if any, is gone). */
  commit(): Promise<void>;
  /** Give up now (the agent asked, or a check failed): exec the previous image again (exec),
   *  or tell the previous one and exit (successor). Returns only if that was impossible. */
  rollback(reason: string): void;
}

export const guardOf = (): GuardHandle | null => ((globalThis as Record<symbol, unknown>)[GUARD_KEY] as GuardHandle | undefined) ?? null;
