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
