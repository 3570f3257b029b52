/*
 * handover/watchdog: the guard's thread (a worker, bundled as dist/bundle/watchdog.cjs) for an
 * image exec'd in place: it waits, off the event loop, until the image commits or the
 * deadline passes; at the deadline it brings the previous image back itself (rollback.cjs,
 * which execs from this thread: execve replaces the whole process, blocked main thread and
 * all). It reports how long the image's event loop had been silent, from the guard's
 * heartbeat, and where its control device stood (uapi/device-words.ts: its thread had not
 * started, no request had come, one waited for the main thread, or the last was answered
 * when). Before the image is up (flag 2, its device started) the deadline is `upBy`. A commit
 * (flag 0 set) ends it.
 */
import { workerData } from 'node:worker_threads';
import { describeDevice } from '../uapi/device-words.js';
import type { Failure } from '../uapi/handover.js';

const d = workerData as { flag: SharedArrayBuffer; ring: SharedArrayBuffer; device?: SharedArrayBuffer; deadline: number; upBy: number; started: number; entry: string; rollback: string };
const flag = new Int32Array(d.flag);
for (;;) {
  const up = Atomics.load(flag, 2) === 1;
  const until = up ? d.deadline : Math.min(d.upBy, d.deadline);
  const left = until - Date.now();
  if (Atomics.load(flag, 0) === 1) break;
  if (left <= 0) {
    const beat = Atomics.load(flag, 1);
    const silent = Date.now() - (d.started + beat);
    const len = Atomics.load(new Int32Array(d.ring, 0, 1), 0);
    const stderr = Buffer.from(new Uint8Array(d.ring, 4, len)).toString().split('\n').filter(Boolean);
    const loop = silent > 1000 ? `, its event loop blocked for the last ${(silent / 1000).toFixed(1)} s` : '';
    // Up: whether an agent could reach it, and whether its main thread answered.
    const device = up && d.device ? `; ${describeDevice(d.device)}` : '';
    const what = up ? 'did not finish its update by the deadline' : `was not up (its control device started) within ${((d.upBy - d.started) / 1000).toFixed(1)} s`;
    const f: Failure = { reason: `the next version ${what} (hung${loop}${device})`, status: null, stderr };
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    (require(d.rollback) as typeof import('./rollback.js')).rollbackInPlace(d.entry, f);
    break;
  }
  Atomics.wait(flag, 0, 0, Math.min(left, 1000));
}
