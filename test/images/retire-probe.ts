/*
 * The old image's last step after a successor handover (kho/successor.ts retire()): with a
 * few worker threads running, close the fds "handed over", lower every thread, and report
 * which fds are still open and each thread's scheduling policy, as JSON on stdout.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { retire } from '../../src/handover/successor.js';
import * as sys from '../../src/sys/index.js';

const workers = Array.from({ length: 2 }, () => new Worker('setInterval(() => {}, 1000)', { eval: true }));
await Promise.all(workers.map((w) => new Promise((r) => w.once('online', r))));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retire-'));
const handed = Array.from({ length: 12 }, (_, i) => fs.openSync(path.join(dir, `h${i}`), 'w'));
const kept = fs.openSync(path.join(dir, 'kept'), 'w');
retire(handed);
const policy = fs.readdirSync('/proc/self/task').map((tid) => {
  const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]); // field 41: policy
});
process.stdout.write(JSON.stringify({ handedStillOpen: handed.filter(sys.isOpen).length, keptOpen: sys.isOpen(kept), threads: policy.length, policy }) + '\n');
process.exit(0);
