/*
 * cli/agent: what every agent command shares: finding the service (its runtime directory,
 * the device, the pid file), one agent at a time (an flock on <rundir>/agent.lock, held for
 * the command's life), and the table that turns an error's code into the exit status.
 *
 * Lifecycle: lock() → the command talks to the device → the process exits (the kernel drops
 * the lock). A second agent while one holds it: EBUSY naming the holder. A service whose pid
 * file names a dead process: ERR_NO_SERVICE.
 */
import fs from 'node:fs';
import path from 'node:path';
import { DeviceClient } from '../device/client.js';
import { LuoError } from '../errors.js';
import * as sys from '../sys/index.js';

/** Exit statuses, by error code (docs/cli.md). Everything else is 1. */
export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, MALFORMED: 3, NO_SERVICE: 4, TIMEOUT: 5 } as const;
const EXIT_BY_CODE: Record<string, number> = {
  ERR_USAGE: EXIT.USAGE,
  ERR_FDT: EXIT.MALFORMED,
  ERR_DTS: EXIT.MALFORMED,
  ERR_NO_SERVICE: EXIT.NO_SERVICE,
  ETIMEDOUT: EXIT.TIMEOUT,
  ERR_UPDATE_FAILED: EXIT.FAILED,
};

export function exitFor(code: string | undefined): number {
  return (code ? EXIT_BY_CODE[code] : undefined) ?? EXIT.FAILED;
}

export const devicePath = (rundir: string): string => path.join(rundir, 'liveupdate');

/** The pid <rundir>/pid names (null when there is no pid file: a service of an older luo). */
export function servicePid(rundir: string): number | null {
  try {
    const n = Number(fs.readFileSync(path.join(rundir, 'pid'), 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

export function alive(pid: number): boolean {
  const st = sys.processState(pid);
  return st !== null && st !== 'Z' && st !== 'X';
}

/**
 * Whether a process has exited, told by its pidfd. /proc cannot be trusted for this: when a
 * thread other than the main one execs (luo's watchdog rolling an in-place update back), the
 * kernel shows the old main thread as a zombie for a moment before the exec'ing thread takes
 * its pid; a pidfd becomes readable only when the process is really gone. Without pidfds
 * (Linux < 5.3) it falls back to /proc.
 */
export class ProcessWatch {
  readonly pid: number;
  #fd: number;
  #gone = false;
  constructor(pid: number) {
    this.pid = pid;
    try {
      this.#fd = sys.pidfdOpen(pid);
    } catch (e) {
      this.#fd = -1;
      this.#gone = (e as LuoError).code === 'ESRCH';
    }
  }
  get gone(): boolean {
    if (this.#gone) return true;
    if (this.#fd < 0) return !alive(this.pid);
    return (this.#gone = (sys.poll([this.#fd], 0)[0] ?? 0) !== 0);
  }
  close(): void {
    if (this.#fd >= 0) sys.close(this.#fd);
    this.#fd = -1;
  }
}

/** Connect to the service's device; ERR_NO_SERVICE (exit 4) when nothing serves there. */
export function connect(rundir: string): DeviceClient {
  try {
    return DeviceClient.connect(devicePath(rundir));
  } catch (e) {
    const code = (e as LuoError).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') {
      const pid = servicePid(rundir);
      const dead = pid !== null && !alive(pid) ? ` (pid ${pid} is not running)` : '';
      throw new LuoError('ERR_NO_SERVICE', `${(e as Error).message.replace(/^[A-Z0-9_]+: /, '')}${dead}`);
    }
    throw e;
  }
}

/**
 * One agent at a time: an exclusive flock on <rundir>/agent.lock, held until this process
 * exits, with "<pid> <command>" written in it. EBUSY when another agent holds it.
 */
export function lock(rundir: string, what: string): void {
  if (!fs.existsSync(rundir)) return; // connect() will say there is no service
  const file = path.join(rundir, 'agent.lock');
  let fd: number;
  try {
    fd = sys.lockFile(file);
  } catch (e) {
    if ((e as LuoError).code !== 'EAGAIN') throw e;
    let holder = '';
    try {
      holder = fs.readFileSync(file, 'utf8').trim();
    } catch { /* gone meanwhile */ }
    const [pid, ...cmd] = holder.split(' ');
    throw new LuoError('EBUSY', `another agent is driving this service${holder ? ` (${cmd.join(' ') || 'luo'}, pid ${pid})` : ''}: one agent at a time`);
  }
  fs.ftruncateSync(fd, 0);
  fs.writeSync(fd, `${process.pid} ${what}\n`, 0);
}
