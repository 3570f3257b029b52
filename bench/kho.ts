/*
 * npm run bench:kho — time from exec until preserved memory is usable, for 1 MiB, 64 MiB and
 * 1 GiB preserved, beside the `node -e` floor measured the same way in the same run.
 * Prints a table and writes bench/results/kho-<date>.json. Options: --runs N (default 15).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const image = path.join(here, 'kho-image.js');
const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 15;
const SIZES: Array<[string, number]> = [['1 MiB', 2 ** 20], ['64 MiB', 64 * 2 ** 20], ['1 GiB', 2 ** 30]];

function once(mode: string, size: number): { usableMs: number; bootMs?: number } {
  const r = spawnSync(process.execPath, [image, mode, String(size)], { encoding: 'utf8' });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !line.startsWith('{')) throw new Error(`bench image failed (${r.status}): ${r.stderr}`);
  const j = JSON.parse(line) as { usableMs: number; bootMs?: number; ok?: boolean };
  if (j.ok === false) throw new Error('preserved bytes did not survive');
  return j;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const p90 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.9))]!;

const rows: Array<{ case: string; runs: number; medianMs: number; p90Ms: number; bootMedianMs: number | null }> = [];
const samples: Record<string, number[]> = {};
const boots: Record<string, number[]> = {};
const cases: Array<[string, string, number]> = [['node -e (floor)', 'floor', 2 ** 20], ...SIZES.map(([n, s]): [string, string, number] => [n, 'first', s])];
once('first', 2 ** 20); // warm the page cache
// Interleave the cases so drift on the machine hits all of them alike.
for (let i = 0; i < RUNS; i++) {
  for (const [name, mode, size] of cases) {
    const r = once(mode, size);
    (samples[name] ??= []).push(r.usableMs);
    if (r.bootMs !== undefined) (boots[name] ??= []).push(r.bootMs);
  }
}
for (const [name] of cases) {
  rows.push({ case: name, runs: RUNS, medianMs: median(samples[name]!), p90Ms: p90(samples[name]!), bootMedianMs: boots[name] ? median(boots[name]!) : null });
}

let thp = 'unknown';
try {
  thp = /\[(\w+)\]/.exec(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/shmem_enabled', 'utf8'))?.[1] ?? 'unknown';
} catch { /* not Linux or no THP */ }
const floor = rows[0]!.medianMs;
console.log(`shmem THP: ${thp} (with "advise" or "always" the arena uses huge pages: exec tears down ~512x fewer page-table entries)`);
console.log(`exec → preserved memory usable (${RUNS} runs each, interleaved)\n`);
console.log('| preserved | median ms | p90 ms | over node -e | luo boot (KHO adopt + first access) ms |');
console.log('|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.case} | ${r.medianMs.toFixed(1)} | ${r.p90Ms.toFixed(1)} | ${r === rows[0] ? '—' : `+${(r.medianMs - floor).toFixed(1)}`} | ${r.bootMedianMs === null ? '—' : r.bootMedianMs.toFixed(2)} |`);
}
const d = rows[3]!.bootMedianMs! - rows[1]!.bootMedianMs!;
console.log(`\n1 GiB vs 1 MiB: luo boot differs by ${d.toFixed(2)} ms (target: within 1 ms)`);
const date = new Date().toISOString().slice(0, 10);
const out = path.join(here, '..', '..', 'bench', 'results', `kho-${date}-thp-${thp}.json`);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, cpu: os.cpus()[0]?.model, kernel: os.release(), shmemThp: thp, runs: RUNS, rows }, null, 2) + '\n');
console.log(`results: ${path.relative(process.cwd(), out)}`);
