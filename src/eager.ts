/*
 * eager: luo's own code compiled when it is loaded, not function by function on first call.
 * V8 compiles a function the first time it runs; luo's pause is made of code that runs for
 * the first time in its process (the successor's boot and restore, the running image's
 * freeze): compiling it there was half of the one-connection pause (measured: a successor
 * started with --no-lazy took 4.7 ms from the handover to its first adoption, 8.5-11 ms
 * without). So the package's entries (dist/bundle/index.js, register.js and guard.js, made by
 * scripts/facades.ts) load the library through eagerly(): V8's lazy compilation off while
 * luo's modules are compiled, on again before the service's own code loads. It costs a cold
 * start ~30 ms and the image ~1-2 MiB of bytecode.
 * Not after an exec in place (LUO_HANDOVER names an exec's handover): there the load itself is
 * in the pause, and compiling what never runs would lengthen it. Not when the service decides
 * itself (node started with --lazy or --no-lazy), nor with LUO_EAGER=0.
 * Lifecycle: eagerly() once per entry, at load; the flag is set back even when the load
 * fails (the error is the load's). Nothing else; no state.
 */
import v8 from 'node:v8';

/** Whether this process compiles luo eagerly (see the header). */
export function wantEager(env: NodeJS.ProcessEnv = process.env, execArgv: readonly string[] = process.execArgv): boolean {
  if (env.LUO_EAGER === '0') return false;
  const handover = env.LUO_HANDOVER;
  if (handover !== undefined && !handover.startsWith('successor:')) return false;
  return !execArgv.some((a) => /^--(no-)?lazy(=|$)/.test(a));
}

/** Run `load` (an import of luo's modules) with V8's lazy compilation off, if wanted. */
export async function eagerly<T>(load: () => Promise<T>): Promise<T> {
  if (!wantEager()) return load();
  v8.setFlagsFromString('--no-lazy');
  try {
    return await load();
  } finally {
    v8.setFlagsFromString('--lazy');
  }
}
