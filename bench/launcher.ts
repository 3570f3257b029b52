/*
 * bench/launcher: runs commands for a bench process that holds the load (thousands of client
 * sockets, latency arrays). Spawning from that process stalls it: Node's spawn forks it and
 * waits until the child has exec'd, 10-50 ms there at 10 000 connections (10-16 ms at 100),
 * during which it reads no answer, so the busiest client's wait grew by the bench's own stall
 * at every update's start (`luo update`, `pm2 reload`: every contender alike). This small
 * process, forked once before the load starts, spawns them instead.
 *
 * Lifecycle: forked with an IPC channel (common.ts: startLauncher) → for each message
 * {id, cmd, args, env, timeoutMs}: spawn, collect stdout and stderr, SIGKILL at the timeout,
 * answer {id, code, out} → exits when the channel closes (the bench ended or died). A command
 * that cannot be spawned answers code 127 with the error as its output.
 */
import { spawn } from 'node:child_process';

interface Job { id: number; cmd: string; args: string[]; env: NodeJS.ProcessEnv; timeoutMs: number }

process.on('message', (m: Job) => {
  let out = '';
  let answered = false;
  const answer = (code: number): void => {
    if (answered) return;
    answered = true;
    process.send?.({ id: m.id, code, out });
  };
  let p: ReturnType<typeof spawn>;
  try {
    p = spawn(m.cmd, m.args, { env: m.env, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    out = (e as Error).message;
    answer(127);
    return;
  }
  p.stdout!.on('data', (d) => (out += d));
  p.stderr!.on('data', (d) => (out += d));
  const t = setTimeout(() => {
    out += `\n(killed after ${m.timeoutMs / 1000} s)`;
    p.kill('SIGKILL');
  }, m.timeoutMs);
  p.on('error', (e) => {
    clearTimeout(t);
    out += e.message;
    answer(127);
  });
  p.on('exit', (code) => {
    clearTimeout(t);
    answer(code ?? 1);
  });
});
process.on('disconnect', () => process.exit(0));
