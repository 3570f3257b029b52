/*
 * bench/common: what the benches share: a free port, a child whose JSON lines are collected,
 * running a command with a timeout (through a launcher process once startLauncher was called), pm2 installed on first use (into node_modules/.cache, so a
 * bench without network skips pm2 with the reason instead of failing), the machine's
 * description, medians and 10 ms latency buckets.
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { watchStalls } from '../src/config.js';
import { runCommand } from './run-command.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '..', '..');
export const PM2_VERSION = '7.0.4';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
};
export const log = (s: string): void => void process.stderr.write(`${s}\n`);

/**
 * With LUO_TRACE=1, a bench process's own stalls (and, with `gc`, its collections of 1 ms or
 * more) as luo-trace lines on the images' clock, tagged `who`: an answer this process handled
 * late looks like a pause of the service, and the trace must tell the two apart.
 */
export function traceStalls(who: string, opts: { gc?: boolean } = {}): void {
  if (process.env.LUO_TRACE !== '1') return;
  watchStalls((at, what) => void process.stderr.write(`luo-trace ${who} ${(performance.timeOrigin + at).toFixed(2)} ${what}\n`), opts);
}

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return p;
}

/** A child whose stdout JSON lines are collected. */
export class Proc {
  lines: Array<Record<string, any>> = [];
  constructor(readonly child: ChildProcess) {
    if (child.stdout) {
      readline.createInterface({ input: child.stdout }).on('line', (l) => {
        if (l.startsWith('{')) this.lines.push(JSON.parse(l) as Record<string, any>);
      });
    }
  }
  async wait(pred: (l: Record<string, any>) => boolean, ms = 300_000): Promise<Record<string, any>> {
    const t = Date.now();
    for (;;) {
      const l = this.lines.find(pred);
      if (l) return l;
      if (this.child.exitCode !== null) throw new Error(`process exited (${this.child.exitCode})`);
      if (Date.now() - t > ms) throw new Error('timed out');
      await sleep(5);
    }
  }

  /** SIGKILL whoever serves and served: this child, the pid in `rundir`'s pid file (a
   *  successor's), every pid a line named. */
  killAll(rundir?: string): void {
    let pid = 0;
    try {
      if (rundir) pid = Number(fs.readFileSync(path.join(rundir, 'pid'), 'utf8').trim());
    } catch { /* never written */ }
    for (const x of new Set([this.child.pid, pid, ...this.lines.map((l) => Number(l.pid))])) {
      try {
        if (x) process.kill(x, 'SIGKILL');
      } catch { /* gone */ }
    }
  }
}

let launcher: ChildProcess | null = null;
let launched = 0;
const waiting = new Map<number, (r: { code: number; out: string }) => void>();

/**
 * From here on, run() spawns through a small process forked now (bench/launcher.ts), not from
 * this one: call it before the load starts. A fork of a process holding the load stalls it
 * (see launcher.ts), and its clients' waits would count that stall as the service's.
 */
export function startLauncher(): void {
  if (launcher) return;
  const l = fork(path.join(here, 'launcher.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  l.on('message', (m: { id: number; code: number; out: string }) => {
    waiting.get(m.id)?.({ code: m.code, out: m.out });
    waiting.delete(m.id);
    if (waiting.size === 0) l.channel?.unref();
  });
  l.on('exit', () => {
    launcher = null;
    for (const [, done] of waiting) done({ code: 1, out: 'the launcher exited' });
    waiting.clear();
  });
  l.unref();
  l.channel?.unref();
  launcher = l;
}

/** Run a command to completion (run-command.ts), through the launcher once startLauncher was called. */
export function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv, timeoutMs = 300_000): Promise<{ code: number; out: string }> {
  const l = launcher;
  if (l) {
    return new Promise((resolve) => {
      const id = ++launched;
      waiting.set(id, resolve);
      l.channel?.ref();
      l.send({ id, cmd, args, env: { ...process.env, ...env }, timeoutMs });
    });
  }
  return runCommand(cmd, args, { ...process.env, ...env }, timeoutMs);
}

export async function pm2Binary(): Promise<string> {
  const dir = path.join(root, 'node_modules', '.cache', 'luo-bench', `pm2-${PM2_VERSION}`);
  const bin = path.join(dir, 'node_modules', 'pm2', 'bin', 'pm2');
  if (!fs.existsSync(bin)) {
    log(`installing pm2@${PM2_VERSION} into ${path.relative(root, dir)} …`);
    fs.mkdirSync(dir, { recursive: true });
    const r = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--no-save', '--prefix', dir, `pm2@${PM2_VERSION}`], { encoding: 'utf8' });
    if (r.status !== 0 || !fs.existsSync(bin)) throw new Error(`npm install pm2@${PM2_VERSION} failed: ${(r.stderr || r.stdout).trim().split('\n').pop()}`);
  }
  return bin;
}

/** The slowest answer in each 10 ms bucket ([bucket start ms, latency ms]); an empty bucket
 *  (no answer at all: a pause) is absent. Keeps the chart and the results file small. */
export function bucketMax(points: Array<[number, number]>, ms = 10): Array<[number, number]> {
  const m = new Map<number, number>();
  for (const [t, l] of points) {
    const b = Math.floor(t / ms) * ms;
    m.set(b, Math.max(m.get(b) ?? 0, l));
  }
  return [...m].sort((a, b) => a[0] - b[0]).map(([t, l]) => [t, Math.round(l * 100) / 100]);
}

export function machine(): Record<string, unknown> {
  const read = (f: string): string => {
    try {
      return fs.readFileSync(f, 'utf8').trim();
    } catch {
      return 'unknown';
    }
  };
  return {
    cpu: os.cpus()[0]?.model, cores: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version,
    shmemThp: /\[(\w+)\]/.exec(read('/sys/kernel/mm/transparent_hugepage/shmem_enabled'))?.[1] ?? 'unknown',
    fdLimit: spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).stdout.trim(),
  };
}

/** The results file: readable, with each series (and each contender's marks, if any) on one line. */
export function resultJson(r: { series: object; marks?: object }): string {
  const { series, marks, ...rest } = r;
  const head = JSON.stringify(rest, null, 1).replace(/\n}$/, '');
  const lines = (o: object): string => Object.entries(o).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(',\n');
  return `${head},\n${marks ? ` "marks": {\n${lines(marks)}\n },\n` : ''} "series": {\n${lines(series)}\n }\n}\n`;
}

/**
 * A bench's section of docs/benchmarks.md, between its markers (<!-- bench:KEY:begin/end -->):
 * replaced where it stands, or appended under `heading` the first time.
 */
export function writeDocSection(key: string, heading: string, body: string): void {
  const doc = path.join(root, 'docs', 'benchmarks.md');
  const begin = `<!-- bench:${key}:begin -->`;
  const end = `<!-- bench:${key}:end -->`;
  const section = `${begin}\n${body}\n${end}`;
  let text = fs.readFileSync(doc, 'utf8');
  if (text.includes(begin)) text = text.slice(0, text.indexOf(begin)) + section + text.slice(text.indexOf(end) + end.length);
  else text += `\n## ${heading}\n\n${section}\n`;
  fs.writeFileSync(doc, text);
}
