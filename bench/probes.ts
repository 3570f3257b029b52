/*
 * The probes of npm run bench:handover, in a process of their own. The bench holds thousands
 * of idle connections, and a process that does stalls (its collector walks them all: 20-30 ms
 * at 10 000), which the probes would report as the service's pause. This one holds only the
 * probe connections, sends their pings and times their echoes, and sends the update's signal
 * itself, so that every time of an update is taken on one clock, in a process with nothing
 * else to do. It asks for a higher CPU priority (nice -10, where permitted): on a machine
 * of two cores, with the two images and the bench, a probe waiting for the CPU was seen to
 * send 3 pings in 50 ms, which would count as the service's pause.
 * Lifecycle (messages from the bench, over the IPC channel):
 *   {connect, port}      open one probe connection, answer {connected} after its first echo
 *   {start}              ping every probe every 2 ms from now on
 *   {update, pid}        note t0 and send SIGUSR2 to pid; answer {signalled}
 *   {collect, firstReadAt}
 *                        answer {pause, atEpoch, handover, handoverAtEpoch, gaps, pingsInPause,
 *                        pingsInHandover, dropped} for the update since t0 (firstReadAt: when
 *                        the next image first read from a connection, epoch ms; dropped:
 *                        probes the service closed, ever)
 *   {stop}               exit (the kernel closes the probes)
 * An error (a probe that cannot connect, a signal that cannot be sent) is answered as
 * {error, message}; the bench fails the run with it.
 */
import net from 'node:net';
import os from 'node:os';
import { traceStalls } from './common.js';

try {
  os.setPriority(-10);
} catch { /* not permitted: the normal priority */ }

traceStalls('probes', { gc: true });

interface Probe { sock: net.Socket; rx: number[] }
const probes: Probe[] = [];
const pings: number[] = [];
let pinger: NodeJS.Timeout | null = null;
let dropped = 0;
let t0 = 0;
const send = (m: Record<string, unknown>): void => void process.send!(m);
/** How far another process's clock (performance.timeOrigin + now) may be from this one's. */
const CLOCK_SLACK_MS = 1;

process.on('message', (m: { op: string; port?: number; pid?: number; firstReadAt?: number }) => {
  try {
    if (m.op === 'connect') {
      const sock = net.connect(m.port!, '127.0.0.1');
      const p: Probe = { sock, rx: [] };
      let connected = false;
      // Before its first echo: the answer to this request. After: a probe the service
      // dropped, counted and reported with the update (collect).
      sock.on('error', (e) => {
        if (!connected) send({ error: true, message: `probe: ${e.message}` });
      });
      sock.on('close', () => void (connected && dropped++));
      sock.once('connect', () => {
        sock.once('data', () => {
          connected = true;
          sock.on('data', () => p.rx.push(performance.now()));
          probes.push(p);
          send({ connected: probes.length });
        });
        sock.write('.');
      });
    } else if (m.op === 'start') {
      pinger ??= setInterval(() => {
        pings.push(performance.now());
        for (const p of probes) p.sock.write('p');
      }, 2);
      send({ started: true });
    } else if (m.op === 'update') {
      t0 = performance.now();
      process.kill(m.pid!, 'SIGUSR2');
      send({ signalled: true });
    } else if (m.op === 'collect') {
      send(collect(m.firstReadAt ?? NaN));
    } else if (m.op === 'stop') {
      if (pinger) clearInterval(pinger);
      process.exit(0);
    }
  } catch (e) {
    send({ error: true, message: (e as Error).message });
  }
});

/**
 * The service pause: the longest stretch after the signal in which no probe got any echo. A
 * silence that began before the signal counts from the signal on: the update cannot have
 * caused what came before it (this process, stalled 20-45 ms right before it sent the signal,
 * was seen to count that as the service's pause). The handover pause: the silence that ends
 * with the first echo the next image served (the last byte the old image served to the first
 * the new one served), found from when the next image first read (`firstReadAt`, on its
 * clock, which is this one's to well under a millisecond: that read's echo was written right
 * before it was timed, and the old image's last echo came 8 ms or more before it). Often
 * the same silence; where not, the longest was elsewhere (a stall of the old image before
 * its freeze, of the new one after, of this process or of the whole machine). Each probe's
 * own longest silence is its connection gap. How many pings were sent in a silence tells a
 * stall of this process (none) from one of the service.
 */
function collect(firstReadAt: number): Record<string, unknown> {
  const all = probes.flatMap((p) => p.rx).sort((a, b) => a - b);
  let pause = 0;
  let at = 0;
  for (let i = Math.max(1, all.findLastIndex((t) => t < t0)); i < all.length; i++) {
    const from = Math.max(all[i - 1]!, t0);
    if (all[i]! - from > pause) {
      pause = all[i]! - from;
      at = from;
    }
  }
  const gaps = probes.map((p) => {
    let i = p.rx.findLastIndex((t) => t < t0);
    if (i < 0) i = 0;
    let best = 0;
    for (i += 1; i < p.rx.length; i++) best = Math.max(best, p.rx[i]! - p.rx[i - 1]!);
    p.rx = p.rx.slice(-1);
    return best;
  });
  let handover = NaN;
  let handoverAt = NaN;
  const firstNew = Number.isFinite(firstReadAt) ? all.findIndex((t) => t >= firstReadAt - performance.timeOrigin - CLOCK_SLACK_MS) : -1;
  if (firstNew > 0) {
    handoverAt = Math.max(all[firstNew - 1]!, t0);
    handover = all[firstNew]! - handoverAt;
  }
  const pingsIn = (from: number, ms: number): number => pings.filter((x) => x > from && x < from + ms).length;
  const pingsInPause = pingsIn(at, pause);
  const pingsInHandover = Number.isFinite(handover) ? pingsIn(handoverAt, handover) : 0;
  pings.length = 0;
  return { pause, atEpoch: performance.timeOrigin + at, handover, handoverAtEpoch: performance.timeOrigin + handoverAt, t0Epoch: performance.timeOrigin + t0, gaps, pingsInPause, pingsInHandover, dropped };
}
