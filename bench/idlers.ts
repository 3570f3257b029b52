/*
 * The idle connections of npm run bench:handover, in a process of their own, at nice 10. They
 * do nothing during an update, but the process that holds 10 000 sockets collects garbage
 * over them now and then (20-30 ms of CPU on two cores), and on a two-core machine that
 * delayed the service's images in the pause: the bench's own cost, not the update's. Here it
 * runs only on CPU time the service does not want.
 * Lifecycle (messages from the bench, over the IPC channel):
 *   {connect, port, n}   open n connections, in batches of 250, and answer {connected: n}
 *                        once each has had one echo (the service has accepted them all)
 *   {stop}               exit (the kernel closes them)
 * An error (a connection refused) is answered as {error, message}; the bench fails with it.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';

for (const tid of fs.readdirSync('/proc/self/task')) {
  try {
    os.setPriority(Number(tid), 10);
  } catch { /* not permitted: the normal priority */ }
}

const socks: net.Socket[] = [];
const send = (m: Record<string, unknown>): void => void process.send!(m);

process.on('message', (m: { op: string; port?: number; n?: number }) => {
  if (m.op === 'stop') process.exit(0);
  if (m.op !== 'connect') return;
  void (async () => {
    try {
      const mine: net.Socket[] = [];
      for (let i = 0; i < m.n!; i += 250) {
        const batch = Array.from({ length: Math.min(250, m.n! - i) }, () => net.connect(m.port!, '127.0.0.1'));
        await Promise.all(batch.map((s) => new Promise((resolve, reject) => {
          s.once('connect', resolve);
          s.once('error', reject);
        })));
        mine.push(...batch);
      }
      // Every connection echoes once, so the service has accepted all of them.
      await Promise.all(mine.map((s) => new Promise<void>((resolve) => {
        s.once('data', () => resolve());
        s.write('.');
      })));
      for (const s of mine) s.on('error', () => {});
      socks.push(...mine);
      send({ connected: mine.length });
    } catch (e) {
      send({ error: true, message: `idle connection: ${(e as Error).message}` });
    }
  })();
});
