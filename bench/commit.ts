/*
 * npm run bench:commit — what FINISH's write-back costs against the pages changed.
 *
 * A next version that may still be rolled back maps the arena copy-on-write; at FINISH it
 * writes back the pages it changed (found in /proc/self/pagemap) and maps the memfd shared at
 * the same addresses (kho/arena.ts, sys/mapping.ts commitTo). Here: a 1 GiB region of a memfd,
 * filled through a shared mapping (the previous image's), then for each size a fresh private
 * mapping (the next image's) changes that many bytes, contiguous or one byte every 16 pages,
 * and commits. Reported: the commit's time, and the pagemap scan alone (nothing changed).
 * Options: --region-mib 1024  --runs 5. Writes bench/results/commit-<date>.json.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as sys from '../src/sys/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
};
const REGION = Number(arg('region-mib', '1024')) * 2 ** 20;
const RUNS = Number(arg('runs', '5'));
const PAGE = 4096;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const fd = sys.memfdCreate('luo-arena-bench', sys.MFD_CLOEXEC);
sys.ftruncate(fd, REGION);
const shared = sys.Mapping.map(fd, REGION);
for (let o = 0; o < REGION; o += 2 ** 30) shared.bytes(o, Math.min(2 ** 30, REGION - o)).fill(7);

const cases: Array<{ changed: number; layout: 'contiguous' | 'every 16th page' }> = [];
for (const mib of [0, 1, 10, 100, 1024]) {
  if (mib * 2 ** 20 > REGION) continue;
  cases.push({ changed: mib * 2 ** 20, layout: 'contiguous' });
  if (mib > 0 && mib * 2 ** 20 * 16 <= REGION) cases.push({ changed: mib * 2 ** 20, layout: 'every 16th page' });
}

const rows: Array<Record<string, unknown>> = [];
console.log(`region ${REGION / 2 ** 20} MiB, ${RUNS} runs each\n`);
console.log('| changed | layout | commit ms (median) | MB/s |');
console.log('|---|---|---|---|');
for (const c of cases) {
  const ms: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const priv = sys.Mapping.map(fd, REGION, 0, { private: true });
    const pages = c.changed / PAGE;
    const stride = c.layout === 'contiguous' ? 1 : 16;
    for (let p = 0; p < pages; p++) {
      const off = p * stride * PAGE;
      priv.bytes(off, 1)[0] = (r + 1) & 0xff;
    }
    const t0 = performance.now();
    priv.commitTo(fd, [[0, REGION]]);
    ms.push(performance.now() - t0);
    priv.unmap();
  }
  const m = median(ms);
  rows.push({ changedBytes: c.changed, layout: c.layout, commitMs: m, runs: ms });
  console.log(`| ${c.changed / 2 ** 20} MiB | ${c.layout} | ${m.toFixed(2)} | ${c.changed ? (c.changed / 2 ** 20 / (m / 1000)).toFixed(0) : '—'} |`);
}
const date = new Date().toISOString().slice(0, 10);
const out = path.join(here, '..', '..', 'bench', 'results', `commit-${date}.json`);
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, kernel: os.release(), regionBytes: REGION, rows }, null, 2) + '\n');
console.log(`\nresults: ${path.relative(process.cwd(), out)}`);
