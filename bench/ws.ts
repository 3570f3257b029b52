/*
 * npm run bench:ws (and the last part of `npm run bench`): a WebSocket service (bench/ws-app,
 * plain `ws`, nothing of luo's in it) updated under load, luo beside pm2:
 *
 *   luo       `node --import luo/register`, `luo update --successor`
 *   luo-exec  the same app, `luo update` in place
 *   pm2       `pm2 reload` in cluster mode; the app closes its connections (1001) on SIGINT
 *
 * Load, for each update: `connections` long-lived WebSocket connections (ws's own client) each
 * sending a message a second, plus 4 clients sending back to back (the next message once the
 * previous one is answered). Every message carries a sequence number; its answer names the
 * version that served it. A client whose connection closes while it runs reconnects at once,
 * as real clients do: each close is a dropped connection, and each message it had sent and not
 * got an answer to is lost; an answer seen twice is repeated. Measured per update: the longest
 * time a busy client went without an answer (the pause), p50/p99 of messages answered from the
 * update's start to 1 s after its end, dropped, lost, repeated, and which version answered
 * last. Output: bench/results/ws-<date>.json, the table in docs/benchmarks.md (between the
 * bench:ws markers) and docs/bench-ws-latency.svg, which marks every drop and every lost
 * message on its contender's line.
 *
 * Unhappy paths: a contender that cannot start (pm2 not installable) is skipped with the
 * reason; an update that fails is recorded as failed with the agent's error, and the bench goes
 * on with the next contender.
 *
 * Options: --ws-connections 1000  --ws-reps 3  --ws-contenders luo,luo-exec,pm2  --out FILE  --no-docs
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { latencyChart, type MarkKind } from './chart.js';
import { bucketMax, freePort, log, machine, median, pm2Binary, PM2_VERSION, Proc, resultJson, root, run, sleep, startLauncher, writeDocSection } from './common.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const APP = path.join(here, 'ws-app.js');
const CLI = path.join(here, '..', 'src', 'cli', 'main.js');
const now = (): number => performance.now();

type WsContender = 'luo' | 'luo-exec' | 'pm2';
const NAMES: Record<WsContender, string> = { luo: 'luo update --successor (drop-in)', 'luo-exec': 'luo update, in place (drop-in)', pm2: 'pm2 reload (cluster)' };
const COLORS: Record<WsContender, string> = { luo: '#1f77b4', 'luo-exec': '#17becf', pm2: '#d62728' };

/** One WebSocket client: idle (a message every `everyMs`) or busy (back to back). */
export class WsLoad {
  readonly times: number[] = [];
  readonly lat: Array<[number, number]> = [];
  readonly marks: Array<[number, MarkKind]> = [];
  counts = { sent: 0, answered: 0, dropped: 0, lost: 0, repeated: 0 };
  lastVersion = '';
  #ws: WebSocket | null = null;
  #pending = new Map<number, number>(); // seq → sent at
  #seq = 0;
  #running = true;
  #timer: NodeJS.Timeout | null = null;
  #answered: (() => void) | null = null;

  constructor(readonly url: string, readonly busy: boolean, readonly everyMs = 1000) {}

  /** Resolves once connected the first time. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#connect(resolve, reject);
      if (!this.busy) {
        // Spread the idle clients' messages over the interval.
        setTimeout(() => {
          this.#timer = setInterval(() => this.#send(), this.everyMs);
        }, Math.random() * this.everyMs);
      }
    });
  }

  #connect(opened?: () => void, failed?: (e: Error) => void): void {
    const ws = new WebSocket(this.url, { perMessageDeflate: false });
    this.#ws = ws;
    let open = false;
    ws.on('open', () => {
      open = true;
      opened?.();
      if (this.busy) this.#loop();
    });
    ws.on('message', (d) => {
      const m = JSON.parse(String(d)) as { seq: number; v: string };
      const at = this.#pending.get(m.seq);
      if (at === undefined) {
        this.counts.repeated++;
        return;
      }
      this.#pending.delete(m.seq);
      const t = now();
      this.counts.answered++;
      this.times.push(t);
      this.lat.push([t, t - at]);
      this.lastVersion = m.v;
      this.#answered?.();
    });
    ws.on('error', (e) => failed?.(e));
    ws.on('close', () => {
      if (!this.#running) return;
      const t = now();
      // A connection that was open and closed under the client is dropped; a reconnect that
      // failed (nothing listening for a moment) is only retried.
      if (open) {
        this.counts.dropped++;
        this.marks.push([t, 'dropped']);
      }
      // What this connection had sent and not got back is lost: the service that read it is gone.
      for (const _ of this.#pending) {
        this.counts.lost++;
        this.marks.push([t, 'failed']);
      }
      this.#pending.clear();
      this.#answered?.();
      setTimeout(() => this.#running && this.#connect(), 20);
    });
  }

  #send(): boolean {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    const seq = ++this.#seq;
    this.#pending.set(seq, now());
    this.counts.sent++;
    ws.send(`{"seq":${seq}}`);
    return true;
  }

  async #loop(): Promise<void> {
    const ws = this.#ws;
    while (ws && this.#running && ws === this.#ws && ws.readyState === WebSocket.OPEN) {
      const answered = new Promise<void>((r) => (this.#answered = r));
      if (!this.#send()) break;
      await answered;
    }
  }

  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer) clearInterval(this.#timer);
    this.#answered?.();
    const ws = this.#ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      await new Promise<void>((r) => {
        ws.once('close', () => r());
        ws.close(1000);
        setTimeout(() => (ws.terminate(), r()), 2000).unref();
      });
    } else ws?.terminate();
  }
}

interface Service {
  port: number;
  update(next: string): Promise<void>;
  stop(): Promise<void>;
}

async function startLuoApp(tmp: string, successor: boolean): Promise<Service> {
  const port = await freePort();
  const rundir = path.join(tmp, 'run');
  const cmd = (v: string): string[] => [process.execPath, '--import', 'luo/register', APP, '--version', v, '--port', String(port)];
  const [exe, ...args] = cmd('v1');
  const p = new Proc(spawn(exe!, args, { cwd: root, env: { ...process.env, LUO_RUNDIR: rundir, LUO_NAME: 'ws-bench' }, stdio: ['ignore', 'pipe', 'inherit'] }));
  await p.wait((l) => l.event === 'listening');
  while (!fs.existsSync(path.join(rundir, 'liveupdate'))) await sleep(10);
  return {
    port,
    async update(next) {
      const r = await run(process.execPath, [CLI, 'update', ...(successor ? ['--successor'] : []), '--rundir', rundir, '--json', '--timeout', '120', '--', ...cmd(next)]);
      const rep = JSON.parse(r.out.trim().split('\n').filter((l) => l.startsWith('{')).pop() ?? '{}') as { ok?: boolean; error?: string };
      if (!rep.ok) throw new Error(`luo update failed: ${rep.error ?? r.out.slice(-400)}`);
    },
    async stop() {
      p.killAll(rundir);
    },
  };
}

async function startPm2App(tmp: string): Promise<Service> {
  const bin = await pm2Binary();
  const port = await freePort();
  const env = { PM2_HOME: path.join(tmp, 'pm2'), PM2_DISABLE_UPDATE_CHECK: 'true' };
  const pm2 = (v: string, ...a: string[]): Promise<{ code: number; out: string }> => run(process.execPath, [bin, ...a], { ...env, WS_VERSION: v });
  const r = await pm2('v1', 'start', APP, '-i', '1', '--name', 'ws', '--wait-ready', '--listen-timeout', '30000', '--kill-timeout', '1600', '--', '--port', String(port));
  if (r.code !== 0) throw new Error(`pm2 start failed: ${r.out.slice(-500)}`);
  return {
    port,
    async update(next) {
      // pm2 reload restarts the same script with the same arguments: the version it serves is
      // told by its environment instead (--update-env).
      const u = await pm2(next, 'reload', 'ws', '--update-env');
      if (u.code !== 0) throw new Error(`pm2 reload failed: ${u.out.slice(-500)}`);
    },
    async stop() {
      await pm2('', 'kill');
    },
  };
}

export interface WsTrial {
  contender: WsContender; connections: number; rep: number; ok: boolean; error?: string;
  pauseMs: number; p50Ms: number; p99Ms: number; updateMs: number;
  dropped: number; lost: number; repeated: number; sent: number; answered: number; servedAfter: string[];
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
};

/** The longest time without an answer to any busy client, within [t0, t1] (edges count). */
function pauseOf(busy: WsLoad[], t0: number, t1: number): number {
  let worst = 0;
  for (const c of busy) {
    const ts = [t0, ...c.times.filter((t) => t > t0 && t < t1), t1];
    const after = c.times.find((t) => t >= t1);
    if (after !== undefined) ts.push(after);
    for (let i = 1; i < ts.length; i++) worst = Math.max(worst, ts[i]! - ts[i - 1]!);
  }
  return worst;
}

async function trial(contender: WsContender, svc: Service, connections: number, rep: number, next: string): Promise<{ t: WsTrial; series: Array<[number, number]>; marks: Array<[number, MarkKind]> }> {
  const url = `ws://127.0.0.1:${svc.port}/`;
  const idle = Array.from({ length: connections }, () => new WsLoad(url, false));
  const busy = Array.from({ length: 4 }, () => new WsLoad(url, true));
  for (let i = 0; i < idle.length; i += 200) await Promise.all(idle.slice(i, i + 200).map((c) => c.start()));
  await Promise.all(busy.map((c) => c.start()));
  await sleep(1000);
  const all = [...idle, ...busy];
  const t0 = now();
  let error: string | undefined;
  await svc.update(next).catch((e: Error) => (error = e.message));
  const t1 = now();
  await sleep(1500);
  await Promise.all(all.map((c) => c.stop()));
  const tEnd = now();
  const sum = (f: (c: WsLoad) => number): number => all.reduce((n, c) => n + f(c), 0);
  const lats = busy.flatMap((c) => c.lat.filter(([e]) => e >= t0 && e <= t1 + 1000).map(([, l]) => l));
  const raw: Array<[number, number]> = [];
  for (const c of busy) for (const [e, l] of c.lat) if (e >= t0 - 1000 && e <= tEnd) raw.push([e - t0, l]);
  const marks: Array<[number, MarkKind]> = [];
  for (const c of all) for (const [e, k] of c.marks) marks.push([Math.round(e - t0), k]);
  marks.sort((a, b) => a[0] - b[0]);
  const t: WsTrial = {
    contender, connections, rep, ok: error === undefined, ...(error ? { error } : {}),
    pauseMs: Math.round(pauseOf(busy, t0, t1) * 10) / 10,
    p50Ms: Math.round(pct(lats, 50) * 100) / 100, p99Ms: Math.round(pct(lats, 99) * 100) / 100,
    updateMs: Math.round(t1 - t0),
    dropped: sum((c) => c.counts.dropped), lost: sum((c) => c.counts.lost), repeated: sum((c) => c.counts.repeated),
    sent: sum((c) => c.counts.sent), answered: sum((c) => c.counts.answered),
    servedAfter: [...new Set(all.map((c) => c.lastVersion))].sort(),
  };
  return { t, series: bucketMax(raw), marks };
}

export interface WsResult {
  date: string; command: string; machine: Record<string, unknown>; settings: Record<string, unknown>;
  durationS: number; skipped: Record<string, string>; trials: WsTrial[];
  marks: Record<string, Array<[number, MarkKind]>>; series: Record<string, Array<[number, number]>>;
}

export async function runWsBench(argv: string[]): Promise<WsResult> {
  const opt = (n: string, d: string): string => {
    const i = argv.indexOf(`--${n}`);
    return i >= 0 && argv[i + 1] ? argv[i + 1]! : d;
  };
  const CONNS = Number(opt('ws-connections', '1000'));
  const REPS = Number(opt('ws-reps', '3'));
  const CONTENDERS = opt('ws-contenders', 'luo,luo-exec,pm2').split(',') as WsContender[];
  startLauncher(); // updates are spawned from a process without the load (launcher.ts)
  const tStart = now();
  const trials: WsTrial[] = [];
  const series: Record<string, Array<[number, number]>> = {};
  const marks: Record<string, Array<[number, MarkKind]>> = {};
  const skipped: Record<string, string> = {};
  for (const c of CONTENDERS) {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `luo-bench-ws-${c}-`));
    log(`ws: ${c}, ${CONNS} connections`);
    let svc: Service | null = null;
    try {
      svc = c === 'pm2' ? await startPm2App(tmp) : await startLuoApp(tmp, c === 'luo');
      for (let rep = 0; rep < REPS; rep++) {
        const r = await trial(c, svc, CONNS, rep, rep % 2 === 0 ? 'v2' : 'v1');
        trials.push(r.t);
        if (rep === 0) {
          series[c] = r.series;
          marks[c] = r.marks;
        }
        log(`  update ${rep + 1}: pause ${r.t.pauseMs} ms, p99 ${r.t.p99Ms} ms, dropped ${r.t.dropped}, lost ${r.t.lost}, repeated ${r.t.repeated}, served after: ${r.t.servedAfter.join(',')}${r.t.error ? `, FAILED: ${r.t.error}` : ''}`);
      }
    } catch (e) {
      log(`  ${c} skipped: ${(e as Error).message}`);
      skipped[c] = (e as Error).message;
    } finally {
      await svc?.stop().catch(() => {});
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  return {
    date: new Date().toISOString().slice(0, 10), command: '', machine: machine(),
    settings: { connections: CONNS, reps: REPS, busyClients: 4, idleEveryMs: 1000, pm2: PM2_VERSION },
    durationS: Math.round((now() - tStart) / 1000), skipped, trials, marks, series,
  };
}

export function wsTable(res: WsResult): string {
  const rows = ['| contender | connections | pause (max gap) ms | p50 / p99 ms | dropped | messages lost | repeated | served after |', '|---|---|---|---|---|---|---|---|'];
  for (const c of [...new Set(res.trials.map((t) => t.contender))]) {
    const ts = res.trials.filter((t) => t.contender === c);
    const sum = (f: (t: WsTrial) => number): number => ts.reduce((n, x) => n + f(x), 0);
    const failed = ts.filter((t) => !t.ok).length;
    rows.push(`| ${NAMES[c]} | ${ts[0]!.connections.toLocaleString('en')} | ${median(ts.map((t) => t.pauseMs)).toFixed(1)} | ${median(ts.map((t) => t.p50Ms)).toFixed(2)} / ${median(ts.map((t) => t.p99Ms)).toFixed(2)} | ${sum((t) => t.dropped).toLocaleString('en')} of ${((ts[0]!.connections + 4) * ts.length).toLocaleString('en')} | ${sum((t) => t.lost).toLocaleString('en')} of ${sum((t) => t.sent).toLocaleString('en')} | ${sum((t) => t.repeated)} | ${ts.map((t) => t.servedAfter.join('+')).join(', ')}${failed ? ` (${failed} update(s) failed)` : ''} |`);
  }
  return rows.join('\n');
}

export function wsSvg(res: WsResult): string {
  const names = Object.keys(res.series) as WsContender[];
  return latencyChart('Slowest answer per 10 ms to 4 busy WebSocket clients, across one update (log scale; the update starts at 0 s)',
    `${String(res.settings.connections)} long-lived WebSocket connections (ws), each a message a second; ${res.date}, ${String(res.machine.cores)} cores, Node ${String(res.machine.node)}.`,
    names.map((n) => ({ name: NAMES[n], color: COLORS[n], series: res.series[n]!, marks: res.marks[n] ?? [] })));
}

export function writeWsDocs(res: WsResult, resultsFile: string): void {
  const m = res.machine;
  const section = [
    `${res.date}, \`${res.command}\` (${res.durationS} s), on ${String(m.cores)} × ${String(m.cpu)}, ${String(m.memGiB)} GiB, Linux ${String(m.kernel)}, Node ${String(m.node)}. Raw figures: \`bench/results/${path.basename(resultsFile)}\`.`,
    '',
    wsTable(res),
    '',
    'The service: bench/ws-app.ts, an http.Server with a `ws` WebSocketServer answering each message with the version serving, unchanged for every contender (luo runs it with `node --import luo/register`). pause: the longest a busy client (4 of them, each message sent once the previous one is answered) went without an answer while the update ran. p50/p99: latency of the busy clients\' messages answered from the update\'s start to 1 s after its end. dropped: connections closed under the clients, over all updates (each client reconnects at once). messages lost: sent and never answered, because the connection that carried them closed. served after: the versions that answered each update\'s last messages.',
    '',
    ...Object.entries(res.skipped).map(([k, v]) => `Skipped: ${k}: ${v}\n`),
    '![WebSocket message latency across one update](bench-ws-latency.svg)',
  ].join('\n');
  writeDocSection('ws', `A WebSocket service: luo beside pm2 (\`npm run bench:ws\`, part of \`npm run bench\`)`, section);
  fs.writeFileSync(path.join(root, 'docs', 'bench-ws-latency.svg'), wsSvg(res));
}

/** Run it, write the results file (and the docs unless --no-docs). */
export async function wsMain(argv: string[], command: string): Promise<void> {
  const res = await runWsBench(argv);
  res.command = command;
  const i = argv.indexOf('--ws-out');
  const out = i >= 0 && argv[i + 1] ? argv[i + 1]! : path.join(root, 'bench', 'results', `ws-${res.date}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, resultJson(res));
  log(`ws results: ${path.relative(root, out)} (${res.durationS} s)`);
  if (!argv.includes('--no-docs')) {
    writeWsDocs(res, out);
    log('docs/benchmarks.md and docs/bench-ws-latency.svg regenerated');
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const argv = process.argv.slice(2);
  wsMain(argv, `npm run bench:ws${argv.length ? ` -- ${argv.join(' ')}` : ''}`).catch((e) => {
    log(`bench:ws: ${(e as Error).stack ?? e}`);
    process.exit(1);
  });
}
