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
 *   {collect}            answer {pause, atEpoch, gaps, pingsInPause, dropped} for the update
 *                        since t0 (dropped: probes the service closed, ever)
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

process.on('message', (m: { op: string; port?: number; pid?: number }) => {
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
      send(collect());
    } else if (m.op === 'stop') {
      if (pinger) clearInterval(pinger);
      process.exit(0);
    }
  } catch (e) {
    send({ error: true, message: (e as Error).message });
  }
});

/**
 * The service pause: the longest stretch after the signal in which no probe got any echo (the
 * last byte the old image served to the first the new one served). A silence that began
 * before the signal counts from the signal on: the update cannot have caused what came
 * before it (this process, stalled 20-45 ms right before it sent the signal, was seen to count
 * that as the service's pause). Each probe's own longest silence is its connection gap. How
 * many pings were sent in the pause tells a stall of this process (none) from one of the
 * service.
 */
function collect(): Record<string, unknown> {
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
  const pingsInPause = pings.filter((x) => x > at && x < at + pause).length;
  pings.length = 0;
  return { pause, atEpoch: performance.timeOrigin + at, t0Epoch: performance.timeOrigin + t0, gaps, pingsInPause, dropped };
}
