/*
 * The service the transaction tests update through the agent (`luo update`): a TCP echo
 * server whose connections luo carries, and 4 MiB of preserved memory holding a pattern
 * (subsystem "txn-mem"). Every image says JSON lines on stdout:
 *   {event:'started', pid, fault}           its first line, before boot()
 *   {event:'ready', pid, port, state, checksum, restored, number, lastUpdate}
 *   {event:'frozen', pid, checksum}         the old image at FROZEN (the memory as handed over)
 *   {event:'resumed', pid, checksum, lastUpdate}   the old image serving again after a rollback
 * `--fault F` makes this image (a next version) fail in one way, at one moment:
 *   throw-top, hang-before-boot-alive, hang-before-boot-blocked, kill-at-spawn, stop-at-spawn
 *                             before boot()
 *   stop-at-ready, kill-at-ready        right before it says it is ready (successor)
 *   stop-after-early, kill-after-early  once it holds the fds sent before the freeze (successor)
 *   stop-at-ahead, kill-at-ahead        when asked to read memory ahead, before the freeze (successor)
 *   throw-after-boot, kill-after-boot, stop-after-boot   right after boot() returned
 *   exit-after-restore          restores the server, then exits 3
 *   hang-after-boot-alive       restores, never starts its device
 *   hang-after-boot-blocked     restores, then blocks its event loop
 *   hang-after-device-blocked   starts its device, then blocks its event loop: the agent's
 *                               request is taken by the device's thread and never answered
 *   die-on-probation            serves (and echoes) for 400 ms after its device is up, exits 4
 * A next version that gets past boot() first scribbles over the preserved pattern and
 * allocates more preserved memory: the previous version must not see any of it.
 * `--freeze-delay MS`: a subsystem whose freeze says {event:'freezing'} and waits (the test
 * stops a successor then). `--fail-prepare`: a subsystem whose PREPARE fails (ENOSPC).
 */
import fs from 'node:fs';
import net from 'node:net';
import { boot, connectionsOf, pendingHandover, preserveServer, restoreServer, startDevice, State } from 'luo';
import { checkPattern, fillPattern } from '../../src/util/pattern.js';

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const fault = arg('fault') ?? '';
const say = (o: Record<string, unknown>): void => void process.stdout.write(JSON.stringify(o) + '\n');
const self = (sig: NodeJS.Signals): void => void process.kill(process.pid, sig);
const SIZE = 4 * 2 ** 20;
const SEED = 0x5eed;

say({ event: 'started', pid: process.pid, fault, pending: pendingHandover() });
if (fault === 'throw-top') throw new Error('txn: thrown at top level');
if (fault === 'kill-at-spawn') self('SIGKILL');
if (fault === 'stop-at-spawn') self('SIGSTOP');
if (fault === 'hang-before-boot-blocked') for (;;) { /* a blocked event loop */ }
if (fault === 'hang-before-boot-alive') {
  setInterval(() => {}, 1000);
  await new Promise(() => {});
}

const luo = boot({
  arenaSize: 2 ** 30,
  beforeHandover: () => {
    if (fault === 'stop-at-ready') self('SIGSTOP');
    if (fault === 'kill-at-ready') self('SIGKILL');
  },
  settle: () => {
    if (fault === 'stop-after-early') self('SIGSTOP');
    if (fault === 'kill-after-early') self('SIGKILL');
  },
  ...(fault.endsWith('-at-ahead') ? {
    ahead: () => {
      self(fault === 'stop-at-ahead' ? 'SIGSTOP' : 'SIGKILL');
      return false;
    },
  } : {}),
});
const next = luo.state === State.UPDATED;
if (next && fault === 'throw-after-boot') throw new Error('txn: thrown after boot()');
if (next && fault === 'kill-after-boot') self('SIGKILL');
if (next && fault === 'stop-after-boot') self('SIGSTOP');

// The preserved memory: a pattern, its address the subsystem's payload.
let region = 0;
await luo.registerSubsystem({
  name: 'txn-mem',
  prepare: () => region,
  boot: (data) => {
    region = Number(data);
    luo.restoreMemory(region);
    luo.kho.preservePhys(region, SIZE); // carried again by the next update
  },
});
if (!region) {
  region = luo.allocPreserve(SIZE);
  fillPattern(luo.view(region, SIZE), region, SEED);
}
const checksum = (): string => (checkPattern(luo.view(region, SIZE), region, SEED) === -1 ? 'pattern' : `damaged at ${checkPattern(luo.view(region, SIZE), region, SEED)}`);
const intact = checksum();
if (next && fault) {
  // A failing next version scribbles first: the previous one must never see it.
  luo.view(region, SIZE).fill(0xee, 0, SIZE / 2);
  luo.view(luo.allocPreserve(SIZE), SIZE).fill(0xdd);
}

const server = net.createServer((s) => {
  s.on('error', () => {});
  s.pipe(s);
});
let restored = 0;
if (next) restored = (await restoreServer(luo, 1, server)).connections;
else await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
if (next && fault === 'exit-after-restore') process.exit(3);
if (next && fault === 'hang-after-boot-blocked') for (;;) { /* a blocked event loop */ }
const delay = Number(arg('freeze-delay') ?? 0);
if (delay > 0) {
  await luo.registerSubsystem({
    name: 'txn-slow-freeze',
    freeze: async () => {
      say({ event: 'freezing', pid: process.pid });
      await new Promise((r) => setTimeout(r, delay));
    },
  });
}
if (process.argv.includes('--fail-prepare')) {
  await luo.registerSubsystem({ name: 'txn-no-room', prepare: () => { throw Object.assign(new Error('txn: no room for the update'), { code: 'ENOSPC' }); } });
}
preserveServer(luo, 1, server, { drainTimeoutMs: 1000 });
luo.on('state', (s: number) => {
  if (s === State.FROZEN) say({ event: 'frozen', pid: process.pid, checksum: checksum() });
});
/** What this image holds besides its connections: fds, and arena memory (a leak shows here). */
const holdings = (): { otherFds: number; arenaBytes: number; connections: number } => ({ otherFds: fs.readdirSync('/proc/self/fd').length - connectionsOf(server).size, arenaBytes: luo.kho.arena.allocatedBytes(), connections: connectionsOf(server).size });
luo.on('resumed', () => say({ event: 'resumed', pid: process.pid, checksum: checksum(), lastUpdate: luo.lastUpdate, ...holdings() }));
if (!(next && fault === 'hang-after-boot-alive')) {
  startDevice(luo);
  if (next && fault === 'die-on-probation') setTimeout(() => process.exit(4), 400);
  if (next && fault === 'hang-after-device-blocked') setImmediate(() => { for (;;) { /* a blocked event loop */ } });
}
say({ event: 'ready', pid: process.pid, port: (server.address() as net.AddressInfo).port, state: luo.stateName, checksum: intact, restored, number: luo.liveupdateNumber, lastUpdate: luo.lastUpdate, ...holdings() });
// The highest fd an update would carry now (a test sizes an fd limit by it).
process.on('SIGUSR1', () => {
  const fd = (x: unknown): number => (x as { _handle?: { fd?: number } })._handle?.fd ?? -1;
  say({ event: 'fds', pid: process.pid, highest: Math.max(luo.kho.arena.fd, fd(server), ...[...connectionsOf(server)].map(fd)), ...holdings() });
});
process.on('SIGTERM', () => process.exit(0));
