/*
 * handover/incoming: what this image received from the previous one, whichever transport
 * carried it. Read by luo's core at boot; nothing above luo sees it.
 *
 *   entry        the kho-v1 entry, in this process's numbers (the arena's fd)
 *   fd(n)        the fd the previous image numbered n, in this process: n itself after an
 *                in-place exec, its new number in a successor (EBADF: not handed over)
 *   ready(fds)   for each fd (this process's numbers): input waiting, hung up or in error
 *                now. A hint for serving those first: O(ready) for the fds a successor
 *                watched since before the freeze (epoll), one poll(2) for the others
 *   transactional  the previous version can still resume if this one fails before FINISH (a
 *                successor whose previous image keeps everything, commit-v1; an exec'd image
 *                under luo's guard): its arena is then mapped copy-on-write until commit()
 *   commit()     FINISH: the update becomes final: a successor's previous image lets go (and
 *                exits); an exec'd image's guard is disarmed. ETIMEDOUT, nothing committed,
 *                when the previous image does not answer
 *   rollback()   give up before FINISH: the previous version resumes (the guard execs it
 *                again in place; a successor tells it and exits)
 *   rolledBack   this image is the previous version, brought back in place: why
 *   release()    at FINISH: stop watching (the set is closed off the event loop); a successor also lets the previous image go (it
 *                waits for that, so its exit takes nothing from this image's first moments)
 * Lifecycle: made at boot → used by the files layer while restoring → commit() and release()
 * at FINISH (idempotent; at the latest the link closes when this process exits).
 */
import { fail } from '../errors.js';
import * as sys from '../sys/index.js';
import type { Failure, GuardHandle } from '../uapi/handover.js';
import { commitToPrevious, reportFailure } from './successor.js';

export interface Readiness { set: sys.ReadySet; watched: Uint8Array }

// The loops over every carried fd that run in the pause, as plain functions over typed arrays
// (warm.ts runs each on made-up input before the freeze, so that V8 has optimized them).

/** fds[from..from+count) translated through `map` (null: the same numbers); -1 where not carried. */
export function translateFds(map: Int32Array | null, fds: ArrayLike<number>, from: number, count: number): Int32Array {
  const out = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const n = fds[from + i]!;
    out[i] = map === null ? n : n >= 0 && n < map.length ? map[n]! : -1;
  }
  return out;
}

/**
 * A files tree's "fds" cells (big-endian u32, the previous image's numbers), decoded and
 * translated through `map` (null: the same numbers) in one pass: the old numbers, this
 * process's (-1 where not carried).
 */
export function translateCells(map: Int32Array | null, cells: Uint8Array): { old: number[]; mine: Int32Array } {
  const n = cells.length >>> 2;
  const old = new Array<number>(n);
  const mine = new Int32Array(n);
  for (let i = 0, b = 0; i < n; i++, b += 4) {
    const fd = ((cells[b]! << 24) | (cells[b + 1]! << 16) | (cells[b + 2]! << 8) | cells[b + 3]!) >>> 0;
    old[i] = fd;
    mine[i] = map === null ? fd : fd < map.length ? map[fd]! : -1;
  }
  return { old, mine };
}

/** For each of `fds`: its mark when watched (1 ready), else 255 (not watched: ask the kernel). */
export function readyMarks(fds: ArrayLike<number>, watched: Uint8Array, mark: Uint8Array): Uint8Array {
  const out = new Uint8Array(fds.length);
  for (let i = 0; i < fds.length; i++) {
    const fd = fds[i]!;
    out[i] = fd < watched.length && watched[fd] === 1 ? mark[fd]! : 255;
  }
  return out;
}

export class Incoming {
  readonly kind: 'exec' | 'successor';
  readonly entry: string;
  /** Successor: the previous image's fd number → this process's (-1: not handed over). */
  readonly #map: Int32Array | null;
  #readiness: Readiness | null;
  /** fds the readiness set reported (each once), in order. */
  readonly #reported: number[] = [];
  #link: number;
  readonly #guard: GuardHandle | null;
  readonly #commit: boolean;
  readonly rolledBack: Failure | null;
  #committed = false;

  constructor(kind: 'exec' | 'successor', entry: string, opts: { map?: Int32Array | null; readiness?: Readiness | null; link?: number; commit?: boolean; guard?: GuardHandle | null; rolledBack?: Failure | null } = {}) {
    this.kind = kind;
    this.entry = entry;
    this.#map = opts.map ?? null;
    this.#readiness = opts.readiness ?? null;
    this.#link = opts.link ?? -1;
    this.#commit = opts.commit ?? false;
    this.#guard = opts.guard ?? null;
    this.rolledBack = opts.rolledBack ?? null;
  }

  get transactional(): boolean {
    if (this.#committed) return false;
    return this.kind === 'successor' ? this.#commit : this.#guard?.armed === true && this.#guard.mode === 'exec';
  }

  /** See the header. Idempotent once it succeeded. */
  async commit(timeoutMs: number): Promise<'committed' | 'alone' | 'none'> {
    if (this.#committed) return 'none';
    let r: 'committed' | 'alone' | 'none' = 'none';
    if (this.kind === 'successor' && this.#commit && this.#link >= 0) r = commitToPrevious(this.#link, timeoutMs);
    this.#committed = true;
    await this.#guard?.commit();
    return r;
  }

  /** Whether rollback() can bring the previous version back. */
  get canRollBack(): boolean {
    return !this.#committed && (this.#guard?.armed === true || (this.kind === 'successor' && this.#commit && this.#link >= 0));
  }

  /** See the header; returns only when the previous version cannot be brought back. */
  rollback(reason: string): void {
    if (!this.canRollBack) return;
    if (this.#guard?.armed) {
      this.#guard.rollback(reason);
      return;
    }
    // A successor without a guard (its program is not Node's): say why, then go.
    reportFailure(this.#link, { reason, status: 75, stderr: [] });
    process.exit(75);
  }

  /** True when the carried fds arrived over SCM_RIGHTS (open and close-on-exec already). */
  get received(): boolean {
    return this.#map !== null;
  }

  /** A files tree's fds cells: the previous image's numbers and this process's (-1: not
   *  handed over), in one pass. */
  translateCells(cells: Uint8Array): { old: number[]; mine: Int32Array } {
    return translateCells(this.#map, cells);
  }

  /** fds[from..from+count) in this process's numbers. EBADF for one not handed over. */
  translate(fds: ArrayLike<number>, from: number, count: number): Int32Array {
    const out = translateFds(this.#map, fds, from, count);
    const bad = out.indexOf(-1);
    if (bad >= 0) throw fail('EBADF', `fd ${fds[from + bad]} was not handed over`);
    return out;
  }

  /** True when the previous image's fd `n` was handed over. */
  has(n: number): boolean {
    const m = this.#map;
    return !m || (n >= 0 && n < m.length && m[n]! >= 0);
  }

  /** This process's number for the previous image's fd `n`. EBADF when it was not handed over. */
  fd(n: number): number {
    const m = this.#map;
    if (!m) return n;
    const v = n >= 0 && n < m.length ? m[n]! : -1;
    if (v < 0) throw fail('EBADF', `fd ${n} was not handed over`);
    return v;
  }

  /** Every watched fd the set has reported ready, each once (it watches each one-shot). */
  #drain(r: Readiness): void {
    for (const fd of r.set.ready()) if (fd < r.watched.length && r.watched[fd] === 1) this.#reported.push(fd);
  }

  /**
   * The watched fds that have had input waiting (hung up, in error) since the handover, from
   * the `from`-th reported on, in O(ready), and where the next call should start: a
   * successor's, until release(); null otherwise. Each fd is reported once (a caller keeps
   * what it did not handle yet).
   */
  readySince(from: number): { fds: number[]; next: number } | null {
    const r = this.#readiness;
    if (!r) return null;
    this.#drain(r);
    return { fds: this.#reported.slice(from), next: this.#reported.length };
  }

  ready(fds: ArrayLike<number>): Uint8Array {
    const r = this.#readiness;
    if (!r) return sys.readyNow(Array.from(fds));
    // Ready fds marked in a bitmap over fd numbers, then one pass over `fds`.
    this.#drain(r);
    const mark = new Uint8Array(r.watched.length);
    for (const fd of this.#reported) mark[fd] = 1;
    const out = readyMarks(fds, r.watched, mark);
    const rest: number[] = [];
    const restAt: number[] = [];
    for (let i = out.indexOf(255); i >= 0; i = out.indexOf(255, i + 1)) {
      rest.push(fds[i]!);
      restAt.push(i);
      out[i] = 0;
    }
    if (rest.length) {
      const v = sys.readyNow(rest);
      for (let k = 0; k < rest.length; k++) out[restAt[k]!] = v[k]!;
    }
    return out;
  }

  /** Resolves once the readiness set is closed too (off the event loop: it can be large). */
  release(): Promise<void> {
    const closed = this.#readiness?.set.closeInBackground() ?? Promise.resolve();
    this.#readiness = null;
    if (this.#link >= 0) {
      try {
        sys.close(this.#link);
      } catch { /* closed */ }
      this.#link = -1;
    }
    return closed;
  }
}
