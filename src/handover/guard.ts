/*
 * handover/guard: preloaded (node --import, through NODE_OPTIONS) into every next image luo
 * starts, before any of the image's own code, so that until the image commits (its FINISH)
 * any way it can fail ends with the previous version serving. Bundled on its own
 * (dist/bundle/guard.js) and kept small: after an in-place exec it runs inside the pause.
 *
 * At load: LUO_GUARD says the mode and the deadline; it and the guard's NODE_OPTIONS entry are
 * removed at once (children never inherit the guard). Then, until commit():
 *   - the image exits, whatever the way (an uncaught exception, a syntax error or a missing
 *     module in its own code, process.exit, an empty event loop): exec mode: the previous
 *     image is exec'd again in place with the same handover (rollback.cjs); successor mode:
 *     the previous image is told why (the link), and resumes when this process is gone;
 *   - exec mode: it is not up (its control device started) by `upBy`, or has not committed by
 *     `deadline`, even with its event loop blocked: a watchdog thread (watchdog.cjs) does the
 *     same from its own thread;
 *   - rollback(reason) (the agent asked): the same, now.
 * What it reports: the reason, the exit status, and the last lines written to stderr.
 * A malformed LUO_GUARD: nothing is guarded (the image runs as if started by hand).
 */
import { createRequire } from 'node:module';
import util from 'node:util';
import { Worker } from 'node:worker_threads';
import { DEVICE_WORDS_BYTES } from '../uapi/device-words.js';
import { INTERNAL_WORKER } from '../util/workers.js';
import {
  GUARD_ENV, GUARD_KEY, HANDOVER_ENV, SUCCESSOR_PREFIX, decodeGuard, type Failure, type Guard, type GuardHandle,
} from '../uapi/handover.js';

const STDERR_LINES = 20;

function install(g: Guard): void {
  const here = import.meta.url;
  const load = (): typeof import('./rollback.js') => createRequire(here)('./rollback.cjs') as typeof import('./rollback.js');
  const link = g.mode === 'successor' ? Number(process.env[HANDOVER_ENV]?.slice(SUCCESSOR_PREFIX.length)) : -1;
  const started = Date.now();
  let armed = true;
  let lastError: unknown = null;
  let reason: string | null = null;

  // The last lines the image wrote to stderr (and a copy a watchdog thread can read).
  const lines: string[] = [];
  const ring = new SharedArrayBuffer(8192);
  const ringBytes = new Uint8Array(ring, 4);
  const ringLen = new Int32Array(ring, 0, 1);
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (armed) {
      const text = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) || chunk instanceof Uint8Array ? Buffer.from(chunk as Uint8Array).toString() : '';
      for (const l of text.split('\n')) if (l) lines.push(l.slice(0, 500));
      if (lines.length > STDERR_LINES) lines.splice(0, lines.length - STDERR_LINES);
      const tail = Buffer.from(lines.join('\n')).subarray(-ringBytes.length);
      ringBytes.set(tail);
      Atomics.store(ringLen, 0, tail.length);
    }
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  process.on('uncaughtExceptionMonitor', (err) => void (lastError = err));

  const failure = (status: number | null): Failure => {
    const e = lastError;
    const what = e instanceof Error ? `${e.name}: ${e.message}` : e !== null ? util.inspect(e) : '';
    // Where it was thrown: the first frame of the stack that is not Node's own.
    const at = e instanceof Error ? e.stack?.split('\n').find((l) => /^\s+at /.test(l) && !/node:internal/.test(l))?.trim().replace(/^at /, '') : undefined;
    const why = reason ?? (e ? `it threw ${what.split('\n')[0]!.slice(0, 300)}${at ? ` (at ${at.slice(0, 200)})` : ''}` : `it exited with status ${status}`);
    return { reason: why, status, stderr: lines.slice(-STDERR_LINES) };
  };

  const giveUp = (status: number | null): void => {
    if (!armed) return;
    armed = false;
    const f = failure(status);
    if (g.mode === 'exec' && g.entry) load().rollbackInPlace(g.entry, { ...f, reason: `the next version ${f.reason.replace(/^it /, '')} before it finished its update` });
    else if (link >= 3) load().reportToPrevious(link, f);
    // Still here (the previous version could not be brought back): the process exits, now.
    // Node's exit-time cleanup after this (the watchdog thread's teardown) hung the process,
    // now and then, on Node 24: a main thread waiting on a futex, no other thread left.
    stopWatchdog();
    if (g.mode === 'exec' && g.entry && status !== null) load().exitNow(status);
  };
  process.on('exit', (code) => giveUp(code));

  // In place, nobody else can tell it hangs: a thread that does not need the event loop.
  let watchdog: Worker | null = null;
  const flag = new Int32Array(new SharedArrayBuffer(12)); // [0] committed, [1] heartbeat, [2] up
  const deviceWords = g.mode === 'exec' ? new SharedArrayBuffer(DEVICE_WORDS_BYTES) : undefined;
  const stopWatchdog = (): void => {
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
  };
  if (g.mode === 'exec' && g.entry) {
    watchdog = new Worker(new URL('./watchdog.cjs', here), {
      ...INTERNAL_WORKER,
      workerData: { flag: flag.buffer, ring, device: deviceWords, deadline: g.deadline, upBy: g.upBy, started, entry: g.entry, rollback: new URL('./rollback.cjs', here).pathname },
    });
    watchdog.unref();
    watchdog.on('error', () => {}); // a watchdog that cannot start leaves the exit path
    // A heartbeat: the watchdog says whether the event loop was still turning.
    const beat = setInterval(() => Atomics.store(flag, 1, Math.min(2 ** 31 - 1, Date.now() - started)), 200);
    beat.unref();
  }

  const handle: GuardHandle = {
    version: 1,
    mode: g.mode,
    get armed() {
      return armed;
    },
    up() {
      Atomics.store(flag, 2, 1);
    },
    deviceWords,
    note(why: string) {
      reason ??= why;
    },
    async commit() {
      armed = false;
      stopWatchdog();
      const w = watchdog;
      watchdog = null;
      await w?.terminate();
    },
    rollback(why: string) {
      reason = why;
      if (g.mode === 'exec') giveUp(null);
      else process.exit(75); // the exit handler tells the previous image
    },
  };
  (globalThis as Record<symbol, unknown>)[GUARD_KEY] = handle;
}

const spec = decodeGuard(process.env[GUARD_ENV]);
if (process.env[GUARD_ENV] !== undefined) {
  delete process.env[GUARD_ENV];
  // Our own --import goes; what was there before comes back.
  if (spec?.nodeOptions) process.env.NODE_OPTIONS = spec.nodeOptions;
  else delete process.env.NODE_OPTIONS;
}
if (spec) install(spec);
