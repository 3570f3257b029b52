/*
 * npm run bench:handover — the pause clients see during a live update of the echo service
 * (test/images/echo-lib.ts), holding 1, 1 000 and 10 000 connections, beside the exec floor
 * (`node -e` exec'd from a running image, measured the same way) in the same run.
 *
 * Up to 50 probe connections, spread evenly over all of them, each send a small ping every
 * 2 ms and record when the echo comes back. They live in a process of their own
 * (bench/probes.ts, nice -10), which also sends the update's signal; the idle connections
 * live in another (bench/idlers.ts, nice 10): the collector of a process holding 10 000
 * sockets stalls it 20-30 ms now and then, and neither that stall nor the CPU it takes on a
 * two-core machine may count as the service's. An update in
 * which the probes themselves stood still (fewer than a quarter of their pings sent) is
 * reported and left out of the medians. For each update:
 *   handover pause   the last echo served by the old image (any probe) → the first served by
 *                    the new one (any probe): the silence that ends at the new image's first
 *                    read (its time on the ready line, firstReadAt)
 *   longest silence  the longest time after the signal in which no probe got an echo (a
 *                    silence that began before the signal counts from it): the handover pause,
 *                    or a longer stall elsewhere in the update (the old image's before its
 *                    freeze, the new one's after; or of the probes' process or the whole
 *                    machine); reported with how many updates it was elsewhere
 *   connection gap   each probe's own longest silence across the update (p50 and max): what a
 *                    connection adopted in a later batch sees
 * Both modes: 'exec' (in place, same pid) and 'successor' (the next image pre-started, the
 * handover over SCM_RIGHTS).
 * Options: --sizes 1,1000,10000  --updates 3  --modes exec,successor
 *          --compare DIR  also run another build (DIR is its dist/, e.g. a checkout of the
 *                         previous commit, built) on the same sizes and modes, alternating
 *                         with this one, so that both are measured in one run.
 * Successor mode also samples memory (every 10 ms, /proc/<pid>/status): one image's resident
 * set before the update, the successor's when the pause begins (its sockets built, the arena
 * mapped), and the two processes' combined peak, summed and with the pages they share (node's
 * code, the arena) counted once.
 * LUO_TRACE=1: the images' phase lines on stderr, and the bench's own (the signal, the pause's
 * start and end) on the same clock.
 * BENCH_NODE_ARGS: extra node flags for the service's images, whose other output then
 * goes to stderr (diagnosis: e.g. "--trace-opt --trace-deopt"). BENCH_PROBES: how many probe
 * connections (default 50; diagnosis: what the probes' own traffic costs the pause).
 * Writes bench/results/handover-<date>.json (--out FILE: elsewhere).
 */
import { fork, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { traceStalls } from './common.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const builds: Array<{ name: string; echo: string }> = [{ name: 'this', echo: path.join(here, '..', 'test', 'images', 'echo-a.js') }];
const khoImage = path.join(here, 'kho-image.js');
const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
};
const SIZES = arg('sizes', '1,1000,10000').split(',').map(Number);
const UPDATES = Number(arg('updates', '3'));
const MODES = arg('modes', 'exec,successor').split(',') as Array<'exec' | 'successor'>;
const COMPARE = arg('compare', '');
if (COMPARE) builds.push({ name: path.resolve(COMPARE), echo: path.resolve(COMPARE, 'test', 'images', 'echo-a.js') });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

function floor(): number {
  const xs: number[] = [];
  for (let i = 0; i < 7; i++) {
    const r = spawnSync(process.execPath, [khoImage, 'floor', String(2 ** 20)], { encoding: 'utf8' });
    xs.push(JSON.parse(r.stdout.trim().split('\n').pop()!).usableMs);
  }
  return pct(xs, 0.5);
}

class Svc {
  child: ReturnType<typeof spawn>;
  lines: Array<Record<string, any>> = [];
  constructor(mode: 'exec' | 'successor', echo: string) {
    this.child = spawn(process.execPath, ['--max-old-space-size=2048', ...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean), echo], {
      env: { ...process.env, ECHO_NODE_ARGS: process.env.BENCH_NODE_ARGS ?? '', ECHO_COUNT_FDS: '0', LUO_RUNDIR: fs.mkdtempSync(path.join(os.tmpdir(), 'luo-bench-')), ECHO_SUCCESSOR: mode === 'successor' ? '1' : '0' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let buf = '';
    this.child.stdout!.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (l.startsWith('{')) this.lines.push(JSON.parse(l));
        else if (process.env.BENCH_NODE_ARGS) process.stderr.write(`${l}\n`); // what those flags print
      }
    });
  }
  async wait(pred: (l: Record<string, any>) => boolean, from = 0): Promise<Record<string, any>> {
    for (;;) {
      const l = this.lines.slice(from).find(pred);
      if (l) return l;
      await sleep(2);
    }
  }

  /** The pid serving now (successor mode: the last one that said ready). */
  get pid(): number {
    return (this.lines.filter((l) => l.event === 'ready').at(-1)?.pid as number | undefined) ?? this.child.pid!;
  }

  kill(): void {
    for (const pid of new Set([this.child.pid!, ...this.lines.map((l) => l.pid as number).filter(Boolean)])) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch { /* gone */ }
    }
  }
}


/** A process's resident set in MiB, by kind (null when it is gone): anonymous (its own),
 *  file-backed (node's code and libraries, shared with every node process) and shared memory
 *  (the arena's memfd, shared between the two images). */
interface Rss { anon: number; file: number; shmem: number }
function rssOf(pid: number): Rss | null {
  try {
    const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? NaN) / 1024;
    return { anon: kb('RssAnon'), file: kb('RssFile'), shmem: kb('RssShmem') };
  } catch {
    return null;
  }
}
const total = (r: Rss): number => r.anon + r.file + r.shmem;
/** The successor a running image started (its child running node), if any. */
function childOf(pid: number): number | null {
  try {
    const kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    return kids.at(-1) ?? null;
  } catch {
    return null;
  }
}

/**
 * Successor mode: the memory of an update, sampled every 10 ms from the signal to the next
 * image's ready line: both processes' resident sets (the old image's, the successor's).
 */
class MemorySampler {
  samples: Array<{ t: number; old: Rss | null; next: Rss | null }> = [];
  #timer: NodeJS.Timeout;
  constructor(old: number) {
    let next: number | null = null;
    this.#timer = setInterval(() => {
      next ??= childOf(old);
      this.samples.push({ t: performance.now(), old: rssOf(old), next: next === null ? null : rssOf(next) });
    }, 10);
  }
  stop(): void {
    clearInterval(this.#timer);
  }
  /**
   * The successor's resident set at `t` (the last sample before it); the two processes'
   * combined peak while both lived, as the sum of their resident sets (what each counts as
   * its own, shared pages twice) and with the pages they share counted once (each one's
   * anonymous pages, plus the larger of their file-backed and of their shared-memory pages:
   * the same node binary, the same arena).
   */
  at(t: number): { successorMb: number; bothPeakMb: number; bothSharedOnceMb: number } {
    const before = this.samples.filter((x) => x.t <= t && x.next !== null && Number.isFinite(total(x.next)));
    const ok = (r: Rss | null): r is Rss => r !== null && Number.isFinite(total(r));
    const both = this.samples.filter((x) => ok(x.old) && ok(x.next)) as Array<{ old: Rss; next: Rss }>;
    if (process.env.BENCH_MEM_DEBUG) console.error(JSON.stringify(this.samples.filter((_, i) => i % 20 === 0).slice(0, 40)));
    const max = (xs: number[]): number => (xs.length ? Math.max(...xs) : NaN);
    return {
      successorMb: before.length ? total(before.at(-1)!.next!) : NaN,
      bothPeakMb: max(both.map((x) => total(x.old) + total(x.next))),
      bothSharedOnceMb: max(both.map((x) => x.old.anon + x.next.anon + Math.max(x.old.file, x.next.file) + Math.max(x.old.shmem, x.next.shmem))),
    };
  }
}

/** A helper process of the bench (bench/probes.ts, bench/idlers.ts): one answer per request, in order. */
class Helper {
  #child: ReturnType<typeof fork>;
  #waiting: Array<{ resolve: (m: Record<string, any>) => void; reject: (e: Error) => void }> = [];
  constructor(script: string) {
    this.#child = fork(path.join(here, script), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.#child.on('message', (m: Record<string, any>) => {
      const w = this.#waiting.shift();
      if (m.error) w?.reject(new Error(m.message as string));
      else w?.resolve(m);
    });
    this.#child.once('exit', (code) => {
      for (const w of this.#waiting.splice(0)) w.reject(new Error(`the bench's ${script} process exited (${code})`));
    });
  }
  ask(m: Record<string, unknown>): Promise<Record<string, any>> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
      this.#child.send(m);
    });
  }
  stop(): void {
    this.#child.send({ op: 'stop' });
  }
}

async function runSize(n: number, mode: 'exec' | 'successor', build: { name: string; echo: string }): Promise<Record<string, unknown>> {
  const svc = new Svc(mode, build.echo);
  const port = (await svc.wait((l) => l.event === 'listening')).port as number;
  // The probes are spread evenly over all the connections, in the order they are opened;
  // the others are held, idle, by a process of their own (bench/idlers.ts, at nice 10).
  const nProbes = Math.min(Number(process.env.BENCH_PROBES ?? 50), n);
  const probes = new Helper('probes.js');
  const idlers = new Helper('idlers.js');
  let opened = 0;
  for (let k = 0; k < nProbes; k++) {
    const at = Math.floor((k * n) / nProbes);
    if (at > opened) await idlers.ask({ op: 'connect', port, n: at - opened });
    await probes.ask({ op: 'connect', port });
    opened = at + 1;
  }
  if (n > opened) await idlers.ask({ op: 'connect', port, n: n - opened });
  await probes.ask({ op: 'start' });
  await sleep(500);
  const results: Array<Record<string, number>> = [];
  for (let u = 0; u < UPDATES; u++) {
    const from = svc.lines.length;
    const oneMb = total(rssOf(svc.pid)!);
    const mem = mode === 'successor' ? new MemorySampler(svc.pid) : null;
    await probes.ask({ op: 'update', pid: svc.pid });
    const ready = await svc.wait((l) => l.event === 'ready' || l.event === 'update-failed', from);
    mem?.stop();
    if (ready.event !== 'ready') throw new Error(`update failed: ${JSON.stringify(ready)}`);
    await sleep(Math.max(400, n / 20));
    const got = await probes.ask({ op: 'collect', firstReadAt: ready.firstReadAt ?? NaN });
    if (got.dropped) throw new Error(`the service closed ${String(got.dropped)} probe connection(s) in the update`);
    const pause = got.pause as number;
    const gaps = got.gaps as number[];
    const at = (got.atEpoch as number) - performance.timeOrigin;
    // Fewer than a quarter of the pings due (one per 2 ms) went out in a silence: the probes'
    // own process stood still, so this update measured it, not the service. It is reported
    // and left out of the medians.
    const stalled = (ms: number, pings: number): boolean => ms > 5 && pings < ms / 8;
    const probeStalled = stalled(pause, got.pingsInPause as number);
    if (probeStalled) console.error(`note: the probes stalled for ${pause.toFixed(1)} ms (${got.pingsInPause} pings sent): this update is left out of the medians`);
    const handover = got.handover as number | null;
    if (handover === null || !Number.isFinite(handover)) throw new Error(`no echo from the new image after its first read (firstReadAt ${String(ready.firstReadAt)})`);
    const handoverStalled = stalled(handover, got.pingsInHandover as number);
    if (handoverStalled && !probeStalled) console.error(`note: the probes stalled in the handover's ${handover.toFixed(1)} ms (${got.pingsInHandover} pings sent): this update is left out of the medians`);
    // The longest silence elsewhere than the handover: where, from the handover's start.
    const elsewhere = pause > handover + 0.05;
    // With LUO_TRACE, the pause on the same clock as the images' trace lines.
    if (process.env.LUO_TRACE === '1') {
      process.stderr.write(`luo-trace bench ${(got.atEpoch as number).toFixed(2)} pause-start (${got.pingsInPause} pings sent in it)\nluo-trace bench ${((got.atEpoch as number) + pause).toFixed(2)} pause-end\nluo-trace bench ${(got.t0Epoch as number).toFixed(2)} signal\n`);
      process.stderr.write(`luo-trace bench ${(got.handoverAtEpoch as number).toFixed(2)} handover-start (${got.pingsInHandover} pings sent in it)\nluo-trace bench ${((got.handoverAtEpoch as number) + handover).toFixed(2)} handover-end\n`);
    }
    // Memory: one image's resident set before the update; the successor's when the pause
    // began (its sockets built, the arena mapped); the two processes' combined peak.
    const m = mem?.at(at) ?? null;
    results.push({
      handoverPauseMs: handover, servicePauseMs: pause, elsewhere: elsewhere ? 1 : 0, elsewhereAtMs: elsewhere ? (got.atEpoch as number) - (got.handoverAtEpoch as number) : NaN,
      gapP50Ms: pct(gaps, 0.5), gapMaxMs: Math.max(...gaps), pingsInPause: got.pingsInPause as number, pingsInHandover: got.pingsInHandover as number, probeStalled: probeStalled || handoverStalled ? 1 : 0, restored: ready.restored, bootMs: ready.bootMs,
      ...(m ? { oneImageMb: oneMb, successorAtFreezeMb: m.successorMb, bothPeakMb: m.bothPeakMb, bothSharedOnceMb: m.bothSharedOnceMb } : {}),
    });
  }
  probes.stop();
  idlers.stop();
  svc.kill();
  // (A memory figure can be missing from an update: a sample the process was exiting in.)
  const med = (k: string): number => {
    const xs = results.filter((r) => !r.probeStalled).map((r) => r[k]!).filter((x) => Number.isFinite(x));
    return xs.length ? pct(xs, 0.5) : NaN;
  };
  const memory = mode === 'successor' ? { oneImageMb: med('oneImageMb'), successorAtFreezeMb: med('successorAtFreezeMb'), bothPeakMb: med('bothPeakMb'), bothSharedOnceMb: med('bothSharedOnceMb') } : {};
  const kept = results.filter((r) => !r.probeStalled);
  const elsewhereAt = kept.filter((r) => r.elsewhere).map((r) => `${r.elsewhereAtMs! >= 0 ? '+' : ''}${r.elsewhereAtMs!.toFixed(0)} ms`);
  return { build: build.name, mode, connections: n, updates: UPDATES, handoverPauseMs: med('handoverPauseMs'), servicePauseMs: med('servicePauseMs'), elsewhere: elsewhereAt.length, elsewhereAt, gapP50Ms: med('gapP50Ms'), gapMaxMs: med('gapMaxMs'), execToReadyMs: med('bootMs'), probeStalls: results.filter((r) => r.probeStalled).length, ...memory, runs: results };
}

traceStalls('bench');

const rows = [];
const f = floor();
console.log(`exec floor (node -e, exec'd from a running image): ${f.toFixed(1)} ms\n`);
for (const mode of MODES) {
  for (const n of SIZES) for (const b of builds) {
    const r = await runSize(n, mode, b);
    rows.push(r);
    const hp = r.handoverPauseMs as number;
    const where = (r.elsewhereAt as string[]).length ? ` (elsewhere in ${(r.elsewhereAt as string[]).length}: at ${(r.elsewhereAt as string[]).join(', ')} from the handover)` : '';
    console.log(`${builds.length > 1 ? `[${b.name}] ` : ''}${mode}, ${n} connections: handover pause ${hp.toFixed(1)} ms (floor ${hp - f >= 0 ? '+' : ''}${(hp - f).toFixed(1)}), longest silence ${(r.servicePauseMs as number).toFixed(1)} ms${where}, per-connection gap p50 ${(r.gapP50Ms as number).toFixed(1)} / max ${(r.gapMaxMs as number).toFixed(1)} ms${r.probeStalls ? ` (${String(r.probeStalls)} of ${UPDATES} updates left out: the probes stalled)` : ''}`);
    if (mode === 'successor') {
      const one = r.oneImageMb as number;
      console.log(`  memory (resident): one image ${one.toFixed(0)} MiB; the successor at the freeze ${(r.successorAtFreezeMb as number).toFixed(0)} MiB; both at their peak ${(r.bothSharedOnceMb as number).toFixed(0)} MiB counting shared pages once (${((r.bothSharedOnceMb as number) / one).toFixed(2)}× one image), ${(r.bothPeakMb as number).toFixed(0)} MiB summed (${((r.bothPeakMb as number) / one).toFixed(2)}×)`);
    }
  }
}
console.log(`\n|${builds.length > 1 ? ' build |' : ''} mode | connections | handover pause ms | vs floor | longest silence ms | elsewhere | connection gap p50 ms | connection gap max ms |`);
console.log(`|${builds.length > 1 ? '---|' : ''}---|---|---|---|---|---|---|---|`);
for (const r of rows as Array<Record<string, number>>) {
  const d = r.handoverPauseMs! - f;
  console.log(`|${builds.length > 1 ? ` ${String(r.build)} |` : ''} ${String(r.mode)} | ${r.connections} | ${r.handoverPauseMs!.toFixed(1)} | ${d >= 0 ? '+' : ''}${d.toFixed(1)} | ${r.servicePauseMs!.toFixed(1)} | ${r.elsewhere} of ${r.updates - (r.probeStalls ?? 0)} | ${r.gapP50Ms!.toFixed(1)} | ${r.gapMaxMs!.toFixed(1)} |`);
}
// Issue 14's ratios, per build and mode: each size against one connection, one connection
// against the floor.
for (const b of builds) {
  for (const mode of MODES) {
    const of = (rows as Array<Record<string, number | string>>).filter((r) => r.build === b.name && r.mode === mode);
    const one = of.find((r) => r.connections === 1);
    if (!one) continue;
    const ratios = of.filter((r) => r !== one).map((r) => `${r.connections}: handover ${((r.handoverPauseMs as number) / (one.handoverPauseMs as number)).toFixed(2)}×, longest silence ${((r.servicePauseMs as number) / (one.servicePauseMs as number)).toFixed(2)}×`);
    console.log(`${builds.length > 1 ? `[${b.name}] ` : ''}${mode}, against 1 connection: ${ratios.join('; ') || '-'}; 1 connection against the floor ${((one.handoverPauseMs as number) / f).toFixed(2)}×`);
  }
}
const date = new Date().toISOString().slice(0, 10);
const out = arg('out', '') || path.join(here, '..', '..', 'bench', 'results', `handover-${date}.json`);
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, kernel: os.release(), floorMs: f, rows }, null, 2) + '\n');
console.log(`results: ${path.relative(process.cwd(), out)}`);
process.exit(0);
