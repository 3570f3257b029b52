/*
 * config: every switch luo reads, in one place (the kernel's Kconfig and boot options).
 *
 * Lifecycle: resolveConfig() is called once by whoever boots luo; explicit options win over
 * environment variables, which win over defaults. A malformed value raises LuoError EINVAL
 * naming the variable. docs/configuration.md lists the same table for users.
 */
import os from 'node:os';
import path from 'node:path';
import { fail } from './errors.js';

export type OnCorrupt = 'panic' | 'cold';

export interface LuoConfig {
  /** Service name; names the runtime directory. */
  name: string;
  /** Runtime directory: control socket, state file, debug/. */
  rundir: string;
  /** `liveupdate=`: when false luo stays UNDEFINED and refuses preservation. */
  enabled: boolean;
  /** CONFIG_LIVEUPDATE_SYSFS_API: write <rundir>/state. */
  stateFile: boolean;
  /** CONFIG_LIVEUPDATE_SELFTESTS: expose the selftest hooks (FREEZE trigger, dummy subsystems). */
  selftests: boolean;
  /** CONFIG_KEXEC_HANDOVER_DEBUG: write DTBs under <rundir>/debug/{out,in}/. */
  khoDebug: boolean;
  /** Virtual size of the arena memfd (sparse: only touched pages cost memory). */
  arenaSize: number;
  /** What a corrupt handover does at boot: exit with a fatal error (kernel panic) or boot cold. */
  onCorrupt: OnCorrupt;
  /** A successor prepares (starts, takes the early fds, builds their sockets) in SCHED_IDLE,
   *  on CPU time the serving image does not want, where it can be given its class back. */
  successorIdle: boolean;
}

/** The environment variables, with their meaning (the source of docs/configuration.md). */
export const ENV = {
  LUO_NAME: 'service name (default: the main script\'s base name)',
  LUO_RUNDIR: 'runtime directory (default: /run/luo/<name> for root, else $XDG_RUNTIME_DIR/luo/<name>, else <tmpdir>/luo-<uid>/<name>)',
  LUO_ENABLE: 'liveupdate= : 1/0, y/n, on/off (default on)',
  LUO_STATE_FILE: 'write <rundir>/state (default on)',
  LUO_SELFTESTS: 'selftest hooks (default off; never in production)',
  LUO_KHO_DEBUG: 'write handover DTBs under <rundir>/debug/ (default off)',
  LUO_ARENA_SIZE: 'arena size in bytes, or with a K/M/G/T suffix (default 64G, sparse)',
  LUO_ON_CORRUPT: 'panic (default) or cold: what a corrupt handover does at boot',
  LUO_EAGER: '0: compile luo lazily, on each function\'s first call (default: as it loads, except after an exec in place; src/eager.ts)',
  LUO_TRACE: 'print each update phase with its wall-clock time to stderr ("luo-trace <pid> <ms> <phase>"; default off)',
  LUO_TRACE_MONO: 'with LUO_TRACE: end each line with " @<µs>" on the monotonic clock, the clock of a --cpu-prof profile (default off)',
  LUO_TRACE_LAG: 'with LUO_TRACE: a "LAG <ms>" line whenever the event loop stood still for more than 5 ms, and a "GC <kind> <ms>" line for each collection of 1 ms or more (default off)',
  LUO_TRACE_FAULTS: 'with LUO_TRACE: end each line with " mf=<n>", the minor page faults this process has taken so far (default off)',
  LUO_SUCCESSOR_IDLE: 'a successor prepares in SCHED_IDLE, on CPU time the serving image does not want, and gets the normal class back right before the freeze, or when seen starving there, or after 10 s at the latest; and the old image\'s threads other than its main one wait in SCHED_IDLE from the handover to its outcome (default on; only where it can be given back: CAP_SYS_NICE, or RLIMIT_NICE allowing the nice value)',
  LUO_HANDOVER: 'set by luo itself on exec: the handover entry point (never set it by hand)',
} as const;

export const DEFAULT_ARENA_SIZE = 64 * 2 ** 30;

/** kstrtobool: 1/0, y/n, on/off, true/false (case-insensitive). */
export function parseBool(v: string, what: string): boolean {
  const s = v.trim().toLowerCase();
  if (['1', 'y', 'yes', 'on', 'true'].includes(s)) return true;
  if (['0', 'n', 'no', 'off', 'false'].includes(s)) return false;
  throw fail('EINVAL', `${what}=${JSON.stringify(v)} is not a boolean (use 1/0, y/n, on/off)`);
}

export function parseSize(v: string, what: string): number {
  const m = /^\s*(\d+)\s*([kmgt]?)i?b?\s*$/i.exec(v);
  if (!m) throw fail('EINVAL', `${what}=${JSON.stringify(v)} is not a size`);
  const mul = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const n = Number(m[1]) * mul;
  if (!Number.isSafeInteger(n) || n <= 0) throw fail('EINVAL', `${what}=${v} is out of range`);
  return n;
}

export function defaultName(): string {
  const main = process.argv[1];
  return main ? path.basename(main).replace(/\.[cm]?[jt]s$/, '') : 'node';
}

/** The runtime directory per DESIGN §4. */
export function defaultRundir(name: string, env: NodeJS.ProcessEnv = process.env): string {
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return path.join('/run/luo', name);
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'luo', name);
  return path.join(os.tmpdir(), `luo-${uid}`, name);
}

export function validName(name: string): string {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(name) || name === '.' || name === '..') {
    throw fail('EINVAL', `service name ${JSON.stringify(name)}: use 1-64 of A-Z a-z 0-9 . _ -`);
  }
  return name;
}

export function resolveConfig(opts: Partial<LuoConfig> = {}, env: NodeJS.ProcessEnv = process.env): LuoConfig {
  const bool = (o: boolean | undefined, key: keyof typeof ENV, def: boolean): boolean =>
    o ?? (env[key] !== undefined && env[key] !== '' ? parseBool(env[key]!, key) : def);
  const name = validName(opts.name ?? env.LUO_NAME ?? defaultName());
  const onCorrupt = opts.onCorrupt ?? (env.LUO_ON_CORRUPT || 'panic');
  if (onCorrupt !== 'panic' && onCorrupt !== 'cold') throw fail('EINVAL', `LUO_ON_CORRUPT=${onCorrupt}: use panic or cold`);
  return {
    name,
    rundir: path.resolve(opts.rundir ?? env.LUO_RUNDIR ?? defaultRundir(name, env)),
    enabled: bool(opts.enabled, 'LUO_ENABLE', true),
    stateFile: bool(opts.stateFile, 'LUO_STATE_FILE', true),
    selftests: bool(opts.selftests, 'LUO_SELFTESTS', false),
    khoDebug: bool(opts.khoDebug, 'LUO_KHO_DEBUG', false),
    arenaSize: opts.arenaSize ?? (env.LUO_ARENA_SIZE ? parseSize(env.LUO_ARENA_SIZE, 'LUO_ARENA_SIZE') : DEFAULT_ARENA_SIZE),
    onCorrupt,
    successorIdle: bool(opts.successorIdle, 'LUO_SUCCESSOR_IDLE', true),
  };
}

let traceOn: boolean | undefined;
let monoOn = false;
let faultsOn = false;

/**
 * Call `line(at, what)` whenever this process's event loop stood still for more than 5 ms
 * ("LAG <ms> ms", `at` the time it stopped: a 1 ms timer, unref'd), and, with `gc`, for each
 * collection of 1 ms or more ("GC <kind> <ms> ms", at the time it started: what stood still).
 * `at` is performance.now()'s clock.
 */
export function watchStalls(line: (at: number, what: string) => void, opts: { gc?: boolean } = {}): void {
  let last = performance.now();
  setInterval(() => {
    const now = performance.now();
    if (now - last > 5) line(last, `LAG ${(now - last).toFixed(1)} ms`);
    last = now;
  }, 1).unref();
  if (!opts.gc) return;
  const kinds: Record<number, string> = { 1: 'minor', 2: 'major', 4: 'incremental', 8: 'weakcb' };
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        if (e.duration < 1) continue;
        const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0;
        line(e.startTime, `GC ${kinds[kind] ?? kind} ${e.duration.toFixed(1)} ms`);
      }
    }).observe({ entryTypes: ['gc'] });
  } catch { /* no gc entries on this Node: the LAG lines alone */ }
}

/** LUO_TRACE_LAG (with LUO_TRACE): this process's stalls and collections as trace lines. */
function traceLag(): void {
  watchStalls((at, what) => {
    try {
      process.stderr.write(`luo-trace ${process.pid} ${(performance.timeOrigin + at).toFixed(2)} ${what}\n`);
    } catch { /* stderr closed */ }
  }, { gc: true });
}

/**
 * LUO_TRACE: one stderr line per update phase, with the wall clock, so the pause can be taken
 * apart across images ("luo-trace <pid> <epoch ms> <phase>"). Read once; a malformed value is
 * off (a diagnostic switch must never stop a service).
 */
export function trace(phase: string): void {
  if (traceOn === undefined) {
    try {
      traceOn = parseBool(process.env.LUO_TRACE ?? '0', 'LUO_TRACE');
      monoOn = traceOn && parseBool(process.env.LUO_TRACE_MONO ?? '0', 'LUO_TRACE_MONO');
      faultsOn = traceOn && parseBool(process.env.LUO_TRACE_FAULTS ?? '0', 'LUO_TRACE_FAULTS');
      if (traceOn && parseBool(process.env.LUO_TRACE_LAG ?? '0', 'LUO_TRACE_LAG')) traceLag();
    } catch {
      traceOn = false;
    }
  }
  if (!traceOn) return;
  try {
    process.stderr.write(`luo-trace ${process.pid} ${(performance.timeOrigin + performance.now()).toFixed(2)} ${phase}${monoOn ? ` @${Number(process.hrtime.bigint() / 1000n)}` : ''}${faultsOn ? ` mf=${process.resourceUsage().minorPageFault}` : ''}\n`);
  } catch { /* stderr closed */ }
}
