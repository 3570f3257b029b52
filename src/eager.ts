/*
 * eager: luo's own code compiled when it is loaded, not function by function on first call.
 * V8 compiles a function the first time it runs; luo's pause is made of code that runs for
 * the first time in its process (the successor's boot and restore, the running image's
 * freeze): compiling it there was half of the one-connection pause (measured: 7.9-9.3 ms
 * against 13.3-15.5 with lazy compilation). So the package's entries (dist/bundle/index.js,
 * register.js and guard.js, made by scripts/facades.ts) load the library through
 * loadEagerly(): V8's lazy compilation off while luo's modules are compiled, on again before
 * the service's own code loads. It costs a cold start ~30 ms and the image ~0.6 MiB of
 * bytecode. The bundle is loaded with require() (Node loads an ES module without top-level
 * await synchronously: 20.19 and later, 22.12 and later), so that the entries stay
 * synchronous and a CommonJS service can require('luo') as before.
 * Not after an exec in place (LUO_HANDOVER names an exec's handover): there the load itself is
 * in the pause, and compiling what never runs would lengthen it. Not when the service decides
 * itself (node started with --lazy or --no-lazy), nor with LUO_EAGER=0.
 * Lifecycle: loadEagerly() once per entry, at load; the flag is set back even when the load
 * fails (its error is raised; on a Node that cannot require an ES module, an error saying
 * which Node luo needs). Nothing else; no state.
 */
import { createRequire } from 'node:module';
import v8 from 'node:v8';

/** Whether this process compiles luo eagerly (see the header). */
export function wantEager(env: NodeJS.ProcessEnv = process.env, execArgv: readonly string[] = process.execArgv): boolean {
  if (env.LUO_EAGER === '0') return false;
  const handover = env.LUO_HANDOVER;
  // (uapi/handover.ts's SUCCESSOR_PREFIX; not imported, so that this module loads alone.)
  if (handover !== undefined && !handover.startsWith('successor:')) return false;
  return !execArgv.some((a) => /^--(no-)?lazy(=|$)/.test(a));
}

/** Load `spec` (luo's bundle, relative to `from`, a module URL) with V8's lazy compilation
 *  off, if wanted. Returns its exports. */
export function loadEagerly(from: string, spec: string): Record<string, unknown> {
  const req = createRequire(from);
  const load = (): Record<string, unknown> => {
    try {
      return req(spec) as Record<string, unknown>;
    } catch (e) {
      if ((e as { code?: string }).code === 'ERR_REQUIRE_ESM') throw new Error(`luo: this Node (${process.version}) cannot load an ES module with require(); luo needs Node 20.19 or later, or 22.12 or later`, { cause: e });
      throw e;
    }
  };
  if (!wantEager()) return load();
  v8.setFlagsFromString('--no-lazy');
  try {
    return load();
  } finally {
    v8.setFlagsFromString('--lazy');
  }
}
