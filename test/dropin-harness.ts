/*
 * Drop-in mode harness: an unmodified app (test/apps/, plain JavaScript) run as a user runs it,
 * `node --import luo/register app ARGS`, from the repository (so `luo/register` resolves to this
 * package by its own name), and updated with the real agent, `luo update`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cliPath, distRoot, onJsonLines, runNode, tmpDir, type Run } from './helpers.js';

export const repoRoot = path.resolve(distRoot, '..');
export const appPath = (name: string): string => path.join(repoRoot, 'test', 'apps', name);

/** The command line of a drop-in app: what `luo update --` is given for the next version. */
export const command = (app: string, args: string[]): string[] => [process.execPath, '--import', 'luo/register', appPath(app), ...args];

export class DropIn {
  readonly rundir: string;
  readonly child: ChildProcess;
  readonly app: string;
  /** The app's JSON lines (every version's: a successor inherits stdout). */
  readonly lines: Array<Record<string, unknown>> = [];
  stderr = '';
  port = 0;
  #waiters: Array<{ pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }> = [];

  private constructor(app: string, argv: string[], env: NodeJS.ProcessEnv) {
    this.app = app;
    this.rundir = env.LUO_RUNDIR ?? tmpDir('luo-dropin-');
    const [exe, ...rest] = argv;
    this.child = spawn(exe!, rest, { cwd: repoRoot, env: { ...process.env, LUO_RUNDIR: this.rundir, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    onJsonLines(this.child.stdout!, (l) => {
      this.lines.push(l);
      this.#waiters = this.#waiters.filter((w) => !(w.pred(l) && (w.resolve(l), true)));
    });
    this.child.stderr!.on('data', (d) => (this.stderr += d));
  }

  /** Start an app; resolves once it listens and its control device is up. */
  static start(app: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<DropIn> {
    return DropIn.#ready(new DropIn(app, command(app, args), env));
  }

  /** A compiled test image using the API (test/images), started the same way. */
  static startImage(script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<DropIn> {
    return DropIn.#ready(new DropIn(script, [process.execPath, script, ...args], env));
  }

  static async #ready(d: DropIn): Promise<DropIn> {
    const l = await d.line((x) => x.event === 'listening');
    d.port = Number(l.port);
    await d.deviceUp();
    return d;
  }

  /** The next line matching `pred` (one already printed counts). */
  line(pred: (l: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const had = this.lines.find(pred);
    if (had) return Promise.resolve(had);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no such line within ${timeoutMs} ms; stderr: ${this.stderr}`)), timeoutMs);
      this.#waiters.push({ pred, resolve: (l) => (clearTimeout(t), resolve(l)) });
    });
  }

  /** The control device answers (the device file exists). */
  async deviceUp(timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!fs.existsSync(path.join(this.rundir, 'liveupdate'))) {
      if (Date.now() > until) throw new Error(`the device did not come up; stderr: ${this.stderr}`);
      if (this.child.exitCode !== null) throw new Error(`the app exited ${this.child.exitCode}; stderr: ${this.stderr}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** `luo update --json` to `args` (of the same app unless `app` is given); the agent's run. */
  update(opts: { successor?: boolean; args: string[]; app?: string; extra?: string[] }): Promise<Run & { report: Record<string, any> }> {
    const argv = ['update', '--rundir', this.rundir, '--json', '--timeout', '30', ...(opts.successor ? ['--successor'] : []), ...(opts.extra ?? []), '--', ...command(opts.app ?? this.app, opts.args)];
    return runNode(cliPath, argv, { cwd: repoRoot, timeoutMs: 90_000 }).then((r) => {
      const last = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      return { ...r, report: last ? (JSON.parse(last) as Record<string, any>) : {} };
    });
  }

  /** The pid serving now (the service writes it at boot). */
  get pid(): number {
    try {
      return Number(fs.readFileSync(path.join(this.rundir, 'pid'), 'utf8').trim()) || this.child.pid!;
    } catch {
      return this.child.pid!;
    }
  }

  /** Stop whoever serves, and every process this service ran. */
  stop(): void {
    const pids = new Set([this.child.pid!, this.pid, ...this.lines.map((l) => Number(l.pid)).filter(Boolean)]);
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch { /* gone */ }
    }
  }
}
