/*
 * examples/kv/demo: what `npm start` runs. Starts the key-value service (v1) under luo, puts
 * clients on it (HTTP keep-alive requests, WebSocket messages, a raw TCP echo stream, each
 * checking every answer), then updates it live several times, v1 → v2 → v1 …, with the real
 * agent (`luo update`), and prints one table row per update. Exits 1 if anything was lost,
 * repeated, failed or dropped, if a checksum differs, or if the version did not switch.
 *
 *   node dist/examples/kv/demo.js [--updates 4] [--entries 300000] [--http 8] [--ws 8]
 *                                 [--echo 1] [--interval 1500] [--mode successor|exec]
 *                                 [--json report.json]
 * --mode successor (default): `luo update --successor`, the next version pre-started (a new
 * pid each update); exec: in place, the same pid throughout (a longer pause).
 *
 * Lifecycle: temporary run directory → service up → clients up → (update, settle) × N →
 * clients stop (the echo stream drains) → service SIGTERM → report. A failed update stops
 * the run at once (the report says which phase failed); the service and the temporary
 * directory are cleaned up on every path, including Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { EchoClient, HttpClient, WsClient, maxGap, type Client } from './clients.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.join(here, '..', '..', 'src', 'cli', 'main.js');

interface Flags { updates: number; entries: number; http: number; ws: number; echo: number; interval: number; mode: 'successor' | 'exec'; json?: string }

function flags(argv: string[]): Flags {
  const f: Flags = { updates: 4, entries: 300_000, http: 8, ws: 8, echo: 1, interval: 1500, mode: 'successor' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!.replace(/^--/, '');
    const v = argv[++i];
    if (k === 'json') f.json = v;
    else if (k === 'mode' && (v === 'successor' || v === 'exec')) f.mode = v;
    else if (k in f && v !== undefined && Number.isInteger(Number(v)) && Number(v) >= 0) (f as unknown as Record<string, number>)[k] = Number(v);
    else {
      process.stderr.write(`demo: unknown or bad option ${argv[i - 1]}\nusage: npm start -- [--updates N] [--entries N] [--http N] [--ws N] [--echo N] [--interval MS] [--mode successor|exec] [--json FILE]\n`);
      process.exit(2);
    }
  }
  return f;
}

type Line = Record<string, unknown> & { event: string };

/**
 * The service as a child process, its JSON lines collected. Under successor mode the process
 * started here exits at the first update and its successor (which inherited stdout) goes on
 * printing: `pid` is whoever announced itself last, and stop() kills every pid seen.
 */
export class Service {
  readonly proc: ChildProcess;
  readonly lines: Line[] = [];
  #waiters: Array<{ pred: (l: Line) => boolean; resolve: (l: Line) => void }> = [];
  constructor(file: string, args: string[]) {
    // stderr through a pipe of its own (forwarded), not inherited: an image still exiting must
    // not hold the demo's own output open after the demo is done.
    this.proc = spawn(process.execPath, [file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stderr!.on('data', (d: Buffer) => void process.stderr.write(d));
    readline.createInterface({ input: this.proc.stdout! }).on('line', (text) => {
      let l: Line;
      try {
        l = JSON.parse(text) as Line;
      } catch {
        return;
      }
      this.lines.push(l);
      for (const w of [...this.#waiters]) {
        if (w.pred(l)) {
          this.#waiters.splice(this.#waiters.indexOf(w), 1);
          w.resolve(l);
        }
      }
    });
  }

  wait(pred: (l: Line) => boolean, ms: number, what: string): Promise<Line> {
    const found = this.lines.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (l: Line) => { clearTimeout(t); resolve(l); } };
      const t = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        reject(new Error(`timed out waiting for ${what}`));
      }, ms);
      this.#waiters.push(w);
    });
  }

  get pid(): number {
    const ready = this.lines.filter((l) => l.event === 'ready' && typeof l.pid === 'number');
    return (ready.at(-1)?.pid as number | undefined) ?? this.proc.pid!;
  }

  stop(signal: NodeJS.Signals = 'SIGKILL'): void {
    for (const pid of new Set([this.proc.pid!, ...this.lines.map((l) => l.pid).filter((p): p is number => typeof p === 'number')])) {
      try {
        process.kill(pid, signal);
      } catch { /* gone */ }
    }
  }
}

/** Run the agent (`luo …`) to completion. */
export function agent(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('exit', (code) => resolve({ code: code ?? 1, out }));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const sum = (cs: Client[], k: 'failed' | 'dropped' | 'mismatches' | 'lost' | 'repeated' | 'requests'): number => cs.reduce((n, c) => n + c.counts[k], 0);

export interface UpdateRow {
  n: number; from: string; to: string; ok: boolean; agentMs: number; pauseMs: number; connectionsBefore: number;
  connectionsAfter: number; carried: number; failed: number; dropped: number; lostOrRepeated: number; mismatches: number;
  checksumBefore: string; checksumAfter: string; checksumOk: boolean; versionServed: string; migrated: string; error?: string;
}

export async function runDemo(f: Flags): Promise<{ ok: boolean; rows: UpdateRow[]; totals: Record<string, number> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luo-demo-'));
  const rundir = path.join(dir, 'run');
  const common = ['--rundir', rundir, '--entries', String(f.entries)];
  const out = (s: string): void => void process.stdout.write(s);
  out(`luo demo: a key-value service with ${f.entries.toLocaleString('en')} entries in preserved memory, ${f.http} HTTP keep-alive clients, ${f.ws} WebSocket clients, ${f.echo} TCP echo stream(s); ${f.updates} live updates (${f.mode === 'successor' ? 'luo update --successor: the next version starts first, then takes over' : 'luo update: the next version is exec\'d in place'})\n`);
  const svc = new Service(path.join(here, 'v1.js'), common);
  const clients: Client[] = [];
  const rows: UpdateRow[] = [];
  let progress: NodeJS.Timeout | null = null;
  const cleanup = (): void => {
    if (progress) clearInterval(progress);
    svc.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  try {
    const ready = await svc.wait((l) => l.event === 'ready', 120_000, 'the service to start');
    const port = Number(ready.port);
    out(`service v1 up on 127.0.0.1:${port} (pid ${String(ready.pid)}), ${(Number(ready.bytes) / 2 ** 20).toFixed(0)} MiB of state, started in ${String(ready.bootMs)} ms\n`);
    for (let i = 0; i < f.http; i++) clients.push(new HttpClient(port, i));
    for (let i = 0; i < f.ws; i++) clients.push(new WsClient(port));
    for (let i = 0; i < f.echo; i++) clients.push(new EchoClient(port));
    await Promise.all(clients.map((c) => c.start()));
    const echo = clients.filter((c): c is EchoClient => c instanceof EchoClient);
    const ws = clients.filter((c): c is WsClient => c instanceof WsClient);
    let phase = 'warming up';
    const line = (): string => `  ${phase.padEnd(22)} ${sum(clients.filter((c) => c instanceof HttpClient), 'requests').toLocaleString('en')} requests · ${ws.reduce((n, c) => n + c.acked, 0).toLocaleString('en')} messages · ${(echo.reduce((n, c) => n + c.received, 0) / 2 ** 20).toFixed(1)} MiB echoed · ${clients.filter((c) => c.connected).length}/${clients.length} connected`;
    if (process.stdout.isTTY) progress = setInterval(() => out(`\r${line()}\x1b[K`), 200);
    await sleep(f.interval);

    let version = 1;
    for (let n = 1; n <= f.updates; n++) {
      const to = version === 1 ? 2 : 1;
      phase = `update ${n}/${f.updates}: v${version} → v${to}`;
      const before = { failed: sum(clients, 'failed'), dropped: sum(clients, 'dropped'), lr: sum(clients, 'lost') + sum(clients, 'repeated'), mm: sum(clients, 'mismatches') };
      const connectionsBefore = clients.filter((c) => c.connected).length;
      const t0 = performance.now();
      const r = await agent(['update', ...(f.mode === 'successor' ? ['--successor'] : []), '--rundir', rundir, '--json', '--', process.execPath, path.join(here, `v${to}.js`), ...common]);
      const t1 = performance.now();
      let res: { ok: boolean; totalMs: number; error?: string };
      try {
        res = JSON.parse(r.out.trim().split('\n').pop()!) as typeof res;
      } catch {
        res = { ok: false, totalMs: Math.round(t1 - t0), error: r.out.trim() };
      }
      const handover = svc.lines.filter((l) => l.event === 'handover').at(n - 1);
      const up = res.ok ? await svc.wait((l) => l.event === 'ready' && l.updated === true && l.version === `v${to}` && svc.lines.indexOf(l) > svc.lines.indexOf(handover!), 30_000, 'the new version') : null;
      const verified = res.ok ? await svc.wait((l) => l.event === 'verified' && l.generation === n, 120_000, 'the state verification') : null;
      await sleep(f.interval);
      const http = clients.filter((c) => c instanceof HttpClient);
      const served = [...new Set(http.map((c) => c.lastVersion))].join('/');
      const row: UpdateRow = {
        n, from: `v${version}`, to: `v${to}`, ok: res.ok, agentMs: res.totalMs, pauseMs: Math.round(maxGap(clients, t0, t1) * 10) / 10,
        connectionsBefore, connectionsAfter: clients.filter((c) => c.connected).length, carried: Number(up?.connections ?? 0),
        failed: sum(clients, 'failed') - before.failed, dropped: sum(clients, 'dropped') - before.dropped,
        lostOrRepeated: sum(clients, 'lost') + sum(clients, 'repeated') - before.lr, mismatches: sum(clients, 'mismatches') - before.mm,
        checksumBefore: String(handover?.checksum ?? '-'), checksumAfter: String(verified?.computed ?? '-'),
        checksumOk: !!verified?.ok && verified.computed === handover?.checksum, versionServed: served,
        migrated: up?.migrated ? `format ${String((up.migrated as { from: number }).from)}→${String((up.migrated as { to: number }).to)}` : '-',
        ...(res.ok ? {} : { error: res.error ?? 'failed' }),
      };
      rows.push(row);
      if (progress) out(`\r\x1b[K`);
      out(`  update ${n}: v${version} → v${to} ${res.ok ? 'done' : 'FAILED'} in ${res.totalMs} ms (pid ${String(up?.pid ?? '?')}), clients paused ${row.pauseMs} ms at most, ${row.carried} connections carried${res.ok ? '' : `: ${row.error}`}\n`);
      if (!res.ok) break;
      version = to;
    }
    phase = 'stopping clients';
    await Promise.all(clients.map((c) => c.stop()));
    if (progress) {
      clearInterval(progress);
      out(`\r\x1b[K`);
    }
    const totals = {
      requests: sum(clients.filter((c) => c instanceof HttpClient), 'requests'), messages: ws.reduce((n, c) => n + c.acked, 0),
      echoedBytes: echo.reduce((n, c) => n + c.received, 0), failed: sum(clients, 'failed'), dropped: sum(clients, 'dropped'),
      lost: sum(clients, 'lost'), repeated: sum(clients, 'repeated'), mismatches: sum(clients, 'mismatches'),
    };
    const ok = rows.length === f.updates && rows.every((r) => r.ok && r.checksumOk && r.versionServed === r.to && r.connectionsAfter === clients.length)
      && totals.failed + totals.dropped + totals.lost + totals.repeated + totals.mismatches === 0;
    return { ok, rows, totals };
  } finally {
    cleanup();
  }
}

function table(rows: UpdateRow[]): string {
  const head = ['#', 'update', 'pause (ms)', 'connections', 'failed', 'lost/repeated', 'state checksum before → after', 'served', 'store format'];
  const body = rows.map((r) => [
    String(r.n), `${r.from} → ${r.to}`, r.pauseMs.toFixed(1), `${r.connectionsBefore} → ${r.connectionsAfter}`, String(r.failed + r.dropped),
    String(r.lostOrRepeated + r.mismatches), `${r.checksumBefore} → ${r.checksumAfter} ${r.checksumOk ? '✓' : '✗'}`, r.versionServed, r.migrated,
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => c.padEnd(w[i]!)).join('  ');
  return [fmt(head), w.map((n) => '─'.repeat(n)).join('  '), ...body.map(fmt)].join('\n') + '\n';
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const f = flags(process.argv.slice(2));
  try {
    const r = await runDemo(f);
    process.stdout.write('\n' + table(r.rows));
    const t = r.totals;
    process.stdout.write(`\n${t.requests.toLocaleString('en')} HTTP requests, ${t.messages.toLocaleString('en')} WebSocket messages, ${(t.echoedBytes / 2 ** 20).toFixed(1)} MiB echoed: ${t.failed} failed, ${t.dropped} connections dropped, ${t.lost} lost, ${t.repeated} repeated, ${t.mismatches} wrong answers.\n`);
    process.stdout.write(r.ok ? 'OK: every update kept every connection, every byte and the whole state.\n' : 'FAILED: see the table above.\n');
    if (f.json) fs.writeFileSync(f.json, JSON.stringify(r, null, 2));
    process.exit(r.ok ? 0 : 1);
  } catch (e) {
    process.stderr.write(`demo: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
