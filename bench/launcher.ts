/*
 * bench/launcher: runs commands for a bench process that holds the load (thousands of client
 * sockets, latency arrays). Spawning from that process stalls it: Node's spawn forks it and
 * waits until the child has exec'd, 10-50 ms there at 10 000 connections (10-16 ms at 100),
 * during which it reads no answer, so the busiest client's wait grew by the bench's own stall
 * at every update's start (`luo update`, `pm2 reload`: every contender alike). This small
 * process, forked once before the load starts, spawns them instead.
 *
 * Lifecycle: forked with an IPC channel (common.ts: startLauncher) → for each message
 * {id, cmd, args, env, timeoutMs}: run-command.ts's runCommand, answered as {id, code, out}
 * → exits when the channel closes (the bench ended or died).
 */
import { runCommand } from './run-command.js';

interface Job { id: number; cmd: string; args: string[]; env: NodeJS.ProcessEnv; timeoutMs: number }

process.on('message', (m: Job) => {
  void runCommand(m.cmd, m.args, m.env, m.timeoutMs).then((r) => process.send?.({ id: m.id, ...r }));
});
process.on('disconnect', () => process.exit(0));
