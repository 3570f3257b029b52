/*
 * Helpers for in-process LUO tests: a Luo with its own temporary runtime directory, a small
 * arena and the selftest hooks on; and a way to read an error's code.
 */
import { boot, Selftests, type Luo, type LuoOptions } from '../src/index.js';
import { tmpDir } from './helpers.js';

export function mkLuo(opts: LuoOptions = {}): Luo {
  return boot({ name: 'test', rundir: tmpDir('luo-rundir-'), arenaSize: 256 * 2 ** 20, selftests: true, ...opts });
}

export function hooks(luo: Luo): Selftests {
  return new Selftests(luo);
}

/** The error code a sync or async call fails with, or 'ok'. */
export async function code(fn: () => unknown): Promise<string> {
  try {
    await fn();
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}

/** Bring a fresh Luo to a state: 'normal', 'prepared' or 'frozen'. */
export async function inState(state: 'normal' | 'prepared' | 'frozen', opts: LuoOptions = {}): Promise<Luo> {
  const luo = mkLuo(opts);
  if (state !== 'normal') await luo.prepare();
  if (state === 'frozen') await hooks(luo).freeze();
  return luo;
}
