/*
 * luo/file-handler: what a file handler is, and the narrow context it works in (the kernel's
 * struct liveupdate_file_ops, reference §4.1). Types only. A handler never sees Luo: it gets
 * preserved memory to allocate, view and free, and in the next image its own token's fds by
 * index, their readiness, and handed-over memory to claim.
 *
 * The hooks of one preserved file, in the order luo calls them (each optional but retrieve):
 *
 *   attach(file, token) → H          preserve: take a reference (the kernel's fget)
 *   prepare({token, file, data})     PREPARE: may return the u64 payload
 *   early({…}) → FdRef[] (or a promise) successor mode, PREPARED, still serving: fds that can go
 *                                    to the successor before the freeze, each with a key
 *   afterEarly({…, ahead, wake})     successor mode, once the successor holds them, still
 *                                    serving, right before FREEZE: get ready for it (a server
 *                                    takes the baseline of its idle connections, names their
 *                                    counters for the successor to read ahead, and parks the
 *                                    idle HTTP ones on the successor's wake set)
 *   freeze({…})                      FREEZE: quiesce (stop reading, drain); may return a payload
 *   snapshot({…}) → Frozen           the end of FREEZE, after every file's freeze, synchronous:
 *                                    the final payload, the fds the next image inherits (the
 *                                    payload names them by their index in this list), and a
 *                                    verify() run right before the point of no return
 *   cancel({…, handedOver})          CANCEL (from PREPARED or FROZEN): undo; after a handover
 *                                    whose next version failed: resume what it left alone
 *   detach(H, token)                 unpreserve: drop the reference (the kernel's fput)
 * In the next image:
 *   retrieve({token, compatible, data, fds, memory})   rebuild the file; required
 *   finish({token, compatible, data, file, reclaimed}) FINISH (file: what retrieve returned,
 *                                    or null when it was never restored)
 *
 * Only the files layer renumbers fds: a payload refers to its token's fds by index.
 */
import type { FdRef } from '../handover/index.js';
import type { Payload } from './callbacks.js';

export type { FdRef };

/** Preserved memory, as a handler sees it in this image. */
export interface HandlerMemory {
  /** Allocate whole pages and preserve them (luo_alloc_preserve); the address. */
  alloc(size: number): number;
  view(addr: number, len: number): Uint8Array;
  /** Unpreserve and free what alloc() gave. */
  free(addr: number, size: number): void;
}

/** Handed-over memory, as a handler sees it in the next image. */
export interface IncomingMemory {
  /** Claim the handed-over region at `addr` (else FINISH releases it); its size. ENOENT if none. */
  claim(addr: number): number;
  view(addr: number, len: number): Uint8Array;
  /** Give claimed memory back (its contents are no longer needed). */
  free(addr: number, size: number): void;
}

export interface FileArgs<H = unknown> {
  token: bigint;
  /** What attach() returned (the file itself by default). */
  file: H;
  /** The file's u64 payload (0 until prepare sets it). */
  data: bigint;
  memory: HandlerMemory;
  /** cancel only: the file was handed over, and the next version failed before FINISH; this
   *  image resumes it. A connection the next version touched must not be resumed. */
  handedOver?: boolean;
  /**
   * afterEarly only, when the successor reads memory ahead (ahead-v1): name preserved memory
   * this handler wrote for the handover and will not change again, so that the successor
   * reads it now, while this image serves, not in the pause. Its payload may then refer to
   * it in a format only such a successor reads (a server's base block: uapi/connections.ts).
   */
  ahead?: (addr: number, size: number) => void;
  /**
   * afterEarly only, when the successor made one: its wake set over the connections sent
   * early, level-triggered, each reported as this image's own fd number (ready(): the ones
   * with input, hung up or in error now; a hint: a number may have been closed and reused
   * since). A server parks its idle connections on it (handlers/connection.ts). Not the
   * handler's to close.
   */
  wake?: WakeSet;
}

/** A readiness set the handlers may poll, not own (sys/epoll.ts: ReadySet). */
export interface WakeSet {
  ready(): number[];
}

/** What a cancel after a handover may report: connections resumed, and those closed because
 *  the failed version had used them. */
export interface Resumed { resumed: number; lost: number }

/** What a snapshot captured: everything the handover needs of this file. */
export interface Frozen {
  /** The payload (omitted: the one prepare/freeze returned). */
  data?: Payload;
  /**
   * The fds the next image inherits, in the order the payload counts them. An entry with a
   * key (see early) is not sent again to a successor that got the same fd under it early.
   */
  fds: Array<number | FdRef>;
  /**
   * The same fds as flat arrays, for thousands of them (a server's connections): so that the
   * pause reads no object per fd. `fds` their numbers; `cells` the same as the files tree
   * stores them (big-endian u32); `same` 1 for each fd that is the very one this handler sent
   * early, still open under the same key (it need not be looked up). Each entry of `fds`
   * above must then be an FdRef.
   */
  flat?: FlatFds;
  /** Right before the exec or the handover: throw if the file changed since the snapshot (the
   *  update is then cancelled, rather than losing or repeating data). */
  verify?(): void;
  /** For the agent's report, carried to the next image: how the file is named (a server's
   *  address), and how many of its connections this image closed instead of carrying. */
  report?: { label?: string; closed?: number };
}

/** See Frozen.flat. */
export interface FlatFds { fds: Int32Array; cells: Uint8Array; same: Uint8Array }

/** One handed-over file, as the next image's handler gets it. */
export interface Retrieve {
  token: bigint;
  /** What the previous image wrote (one of the handler's compatible and reads). */
  compatible: string;
  data: bigint;
  /** The token's fds in this process's numbers, by index (translated once, on first use). */
  readonly fds: readonly number[];
  /** fd `i` of the token in this process's numbers, without translating the others. */
  fd(i: number): number;
  /** fds #from..#from+count-1 in this process's numbers (EBADF: one was not handed over). */
  fdRange(from: number, count: number): Int32Array;
  /** How many fds the token carries. */
  readonly fdCount: number;
  /** For each of `fds` (numbers fd(i) gave): 1 when it has input waiting, has hung up or is
   *  in error now (a hint, to serve those first). */
  ready(fds: ArrayLike<number>): Uint8Array;
  /** The handed-over fds (any token's, this process's numbers) that have had input waiting
   *  (hung up, in error) since the handover, each once, from the `from`-th on, in O(ready) (a
   *  successor watches them since before the freeze), and where the next call starts; null
   *  when that cannot be known without asking about each (after an exec in place; after FINISH). */
  readySince(from: number): { fds: number[]; next: number } | null;
  /** The fds as the previous image numbered them (payloads of older formats name fds so). */
  readonly previousFds: readonly number[];
  memory: IncomingMemory;
  /** This image is the previous version, brought back in place because the next one failed
   *  before FINISH: leave out (close) whatever the failed one used, and say how many. */
  readonly rollback: boolean;
  /** Report connections closed because the failed version had used them. */
  lost(n: number): void;
}

export interface Finished<F = unknown> {
  token: bigint;
  compatible: string;
  data: bigint;
  /** What retrieve returned, or null if the token was never restored. */
  file: F | null;
  reclaimed: boolean;
}

export interface FileHandler<H = unknown> {
  /** Compatible string written in the tree, e.g. "memfd-v1". Unique among handlers. */
  readonly compatible: string;
  /** Older compatible strings retrieve still understands (a previous image may have written them). */
  readonly reads?: readonly string[];
  /** A catch-all handler (the generic fd one) is asked after every specific handler. */
  readonly fallback?: boolean;
  /** True when this handler can preserve `file` (an fd number, a socket, …). */
  canPreserve(file: unknown): boolean;
  attach?(file: unknown, token: bigint): H;
  detach?(file: H, token: bigint): void;
  prepare?(a: FileArgs<H>): Payload | Promise<Payload>;
  early?(a: FileArgs<H>): FdRef[] | Promise<FdRef[]>;
  afterEarly?(a: FileArgs<H>): void | Promise<void>;
  freeze?(a: FileArgs<H>): Payload | Promise<Payload>;
  snapshot?(a: FileArgs<H>): Frozen;
  cancel?(a: FileArgs<H>): void | Resumed | Promise<void | Resumed>;
  retrieve(a: Retrieve): unknown;
  finish?(a: Finished): void | Promise<void>;
}
