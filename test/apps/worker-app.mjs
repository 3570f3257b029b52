// An unmodified app with a worker thread (nothing of luo's in it): the worker answers a
// message; the app says how many luo arenas the process holds (Node gives workers the same
// --import, so a drop-in that ran there too would have booted a second luo).
import fs from 'node:fs';
import http from 'node:http';
import { Worker } from 'node:worker_threads';

const version = process.argv[2] ?? 'v1';
const worker = new Worker(new URL('./worker-thread.mjs', import.meta.url));
await new Promise((r) => worker.once('message', r));
const arenas = () => fs.readdirSync('/proc/self/fd').filter((f) => {
  try {
    return fs.readlinkSync(`/proc/self/fd/${f}`).startsWith('/memfd:luo-arena');
  } catch {
    return false;
  }
}).length;
const server = http.createServer((req, res) => res.end(`${version}\n`));
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'listening', port: server.address().port, v: version, pid: process.pid, arenas: arenas() }));
});
