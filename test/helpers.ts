/*
 * Test helpers: run a compiled script as a real child process, make temp dirs, find tools.
 * Nothing here fakes luo: images are real programs that exec for real.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const distRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const imagePath = (name: string): string => path.join(distRoot, 'test', 'images', `${name}.js`);
export const cliPath = path.join(distRoot, 'src', 'cli', 'main.js');

export interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** Run `node script args` to completion (with a time limit), capturing output. */
export function runNode(script: string, args: string[] = [], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; cwd?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** Every live descendant of `pid` (children, grandchildren…), read from /proc. */
export function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      parent.set(Number(e), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* exited meanwhile */ }
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    for (const [c, pp] of parent) if (pp === p) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

/** The process exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function tmpDir(prefix = 'luo-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

/** Lines of JSON a child printed, parsed (non-JSON lines ignored). */
export function jsonLines(out: string): Array<Record<string, unknown>> {
  return out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Each JSON line a stream carries, parsed, as it arrives (non-JSON lines ignored). */
export function onJsonLines<T = Record<string, unknown>>(stream: NodeJS.ReadableStream, fn: (line: T) => void): void {
  let buf = '';
  stream.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.startsWith('{')) fn(JSON.parse(line) as T);
    }
  });
}

/** The device-service image (test/images/device-service.ts), started and ready. */
export interface DeviceService {
  child: import('node:child_process').ChildProcess;
  path: string;
  /** Ask the service (SIGUSR1) for its state and outgoing tokens. */
  report(): Promise<Record<string, any>>;
}

export async function startDeviceService(env: NodeJS.ProcessEnv): Promise<DeviceService> {
  const child = spawn(process.execPath, [imagePath('device-service')], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  while (!out.includes('"ready"')) await new Promise((r) => setTimeout(r, 10));
  const report = async (): Promise<Record<string, any>> => {
    const before = out.length;
    child.kill('SIGUSR1');
    while (!out.slice(before).includes('\n')) await new Promise((r) => setTimeout(r, 5));
    return JSON.parse(out.slice(before).split('\n')[0]!);
  };
  return { child, path: JSON.parse(out.split('\n')[0]!).path, report };
}
