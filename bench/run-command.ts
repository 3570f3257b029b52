/*
 * bench/run-command: run a command to completion, its stdout and stderr collected; SIGKILLed
 * (and reported as failed) after `timeoutMs`. One that cannot be spawned resolves with code
 * 127 and the error as its output. Used by common.ts's run() and by the launcher process
 * (launcher.ts); no other imports, so that the launcher stays small.
 */
import { spawn } from 'node:child_process';

export function runCommand(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    let out = '';
    let done = false;
    const finish = (code: number): void => {
      if (done) return;
      done = true;
      clearTimeout(t);
      resolve({ code, out });
    };
    let t: ReturnType<typeof setTimeout> | undefined;
    let p: ReturnType<typeof spawn>;
    try {
      p = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      out = (e as Error).message;
      finish(127);
      return;
    }
    p.stdout!.on('data', (d) => (out += d));
    p.stderr!.on('data', (d) => (out += d));
    t = setTimeout(() => {
      out += `\n(killed after ${timeoutMs / 1000} s)`;
      p.kill('SIGKILL');
    }, timeoutMs);
    p.on('error', (e) => {
      out += e.message;
      finish(127);
    });
    p.on('exit', (code) => finish(code ?? 1));
  });
}
