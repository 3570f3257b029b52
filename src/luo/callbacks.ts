/*
 * luo/callbacks: run one user callback (sync or async) under a time limit, and turn whatever
 * it throws into a LuoError.
 *
 * Lifecycle of a call: start the callback → it returns, throws, rejects, or runs past its
 * limit. A timeout is a failure (ETIMEDOUT) like any other; the callback's promise is left to
 * settle on its own, and a late rejection is swallowed so it cannot crash the service. A
 * thrown LuoError keeps its code; an error carrying an errno-name `code` keeps it; anything
 * else becomes ECANCELED, with the original as `cause`.
 */
import { LuoError, errnoOf } from '../errors.js';

export interface Timeouts {
  prepare: number;
  freeze: number;
  cancel: number;
  boot: number;
  finish: number;
  /** Successor mode: how long it may take to take the handover once this image has frozen
   *  (this image serves nothing meanwhile). */
  takeover: number;
  /** How long the next version has, from the handover, to FINISH; past that it is rolled back. */
  commit: number;
}

export const DEFAULT_TIMEOUTS: Timeouts = { prepare: 30_000, freeze: 10_000, cancel: 10_000, boot: 30_000, finish: 10_000, takeover: 1000, commit: 60_000 };

/** What prepare/freeze/snapshot callbacks may return: a new u64 payload, or nothing to keep it. */
export type Payload = bigint | number | void | undefined;

export function toU64(v: Payload, prev: bigint): bigint {
  return v === undefined ? prev : BigInt.asUintN(64, BigInt(v));
}

export function asLuoError(e: unknown, what: string): LuoError {
  if (e instanceof LuoError) {
    const err = new LuoError(e.code, `${what}: ${e.message.replace(/^[A-Z0-9_]+: /, '')}`, { cause: e });
    return err;
  }
  const code = (e as { code?: unknown })?.code;
  let known = 'ECANCELED';
  if (typeof code === 'string') {
    try {
      errnoOf(code);
      known = code;
    } catch { /* not an errno name */ }
  }
  return new LuoError(known, `${what}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}

/** Run `fn` with a limit of `ms` (0 = none). Resolves to its value; rejects with LuoError. */
export async function runCallback<T>(fn: () => T | Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const r = fn(); // sync callbacks (the common case) need no timer
    if (!(r instanceof Promise)) return r;
    const p = r;
    if (!ms) return await p;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new LuoError('ETIMEDOUT', `${what}: timed out after ${ms} ms`)), ms);
    });
    p.catch(() => { /* settles after the timeout: nobody is listening any more */ });
    return await Promise.race([p, timeout]);
  } catch (e) {
    throw e instanceof LuoError && e.code === 'ETIMEDOUT' && e.message.startsWith(what) ? e : asLuoError(e, what);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** For callbacks that "must not fail" (cancel, finish): run, and report a failure as a warning. */
export async function runInfallible(fn: () => unknown, ms: number, what: string): Promise<void> {
  try {
    await runCallback(fn, ms, what);
  } catch (e) {
    process.emitWarning(`luo: ${(e as Error).message} (this callback must not fail; continuing)`, { code: 'LUO_CALLBACK_FAILED' });
  }
}
