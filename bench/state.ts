/*
 * npm run bench:state — state as services hold it, in one run on this machine:
 *
 *   throughput   get and set of 100-byte string values under 10-byte keys, 200 000 keys:
 *                luo.map beside a JS Map (the same process, the same keys, prebuilt) and
 *                beside Redis (a real redis-server, started and stopped here, no persistence,
 *                on 127.0.0.1, through ioredis: one command at a time, and pipelined in
 *                batches of 1 000)
 *   restore      luo.map at 10 MB, 100 MB and 1 GB: after `luo update` (in place, and
 *                --successor), the time the next version's luo.map(name) takes to give the
 *                same entries back (bench/state-image.ts; a sample of them is checked)
 *   keep         luo.keep of a JS Map of the same sizes: the old version's save at FREEZE
 *                (v8.serialize and the copy into preserved memory) and the next version's
 *                load (v8.deserialize), in MB/s
 *
 * Output: bench/results/state-<date>.json and the table in docs/benchmarks.md (between the
 * bench:state markers). Without redis-server on the PATH (Debian: apt install redis-server)
 * the Redis rows are skipped with that reason; the rest runs.
 * Options: --keys 200000  --sizes 10e6,100e6,1e9  --what map,keep  --reps 3 (luo.map services per size)
 *          --no-docs  --out FILE
 *          --docs-from FILE  write docs/benchmarks.md's section from a results file, run nothing
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { boot } from '../src/index.js';
import { freePort, log, machine, Proc, root, run, sleep, writeDocSection } from './common.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const IMAGE = path.join(here, 'state-image.js');
const CLI = path.join(here, '..', 'src', 'cli', 'main.js');
const argv = process.argv.slice(2);
const opt = (n: string, d: string): string => {
  const i = argv.indexOf(`--${n}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : d;
};
const KEYS = Number(opt('keys', '200000'));
/** luo.map services filled and updated (in place, then --successor) per size: its restore
 *  figures are medians (a few ms, on a noisy machine). luo.keep: one each (seconds). */
const REPS = Number(opt('reps', '3'));
const SIZES = opt('sizes', '10e6,100e6,1e9').split(',').map(Number);
const today = new Date().toISOString().slice(0, 10);
const OUT = opt('out', path.join(root, 'bench', 'results', `state-${today}.json`));
const now = (): number => performance.now();

interface Rate { store: string; op: 'get' | 'set'; opsPerSec: number; note?: string }

/** ops/s of `pass` (which does `n` operations), best of `reps` runs (the machine is noisy). */
function rate(n: number, reps: number, pass: () => void): number {
  const xs: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t = now();
    pass();
    xs.push(n / ((now() - t) / 1000));
  }
  return Math.round(Math.max(...xs));
}

async function throughput(): Promise<{ rates: Rate[]; skipped: Record<string, string> }> {
  const keys = Array.from({ length: KEYS }, (_, i) => `key${String(i).padStart(7, '0')}`);
  const values = keys.map((_, i) => `${i}:`.padEnd(100, 'v'));
  const order = keys.map((_, i) => (i * 7919) % KEYS); // a fixed permutation: not sequential
  const rates: Rate[] = [];
  const skipped: Record<string, string> = {};
  let sink = 0;

  const js = new Map<string, string>();
  rates.push({ store: 'JS Map', op: 'set', opsPerSec: rate(KEYS, 5, () => { for (const i of order) js.set(keys[i]!, values[i]!); }) });
  rates.push({ store: 'JS Map', op: 'get', opsPerSec: rate(KEYS, 5, () => { for (const i of order) sink += js.get(keys[i]!)!.length; }) });

  const luo = boot({ name: 'bench-state', rundir: fs.mkdtempSync(path.join(os.tmpdir(), 'luo-bench-state-')) });
  const m = luo.map('bench');
  rates.push({ store: 'luo.map', op: 'set', opsPerSec: rate(KEYS, 5, () => { for (const i of order) m.set(keys[i]!, values[i]!); }) });
  rates.push({ store: 'luo.map', op: 'get', opsPerSec: rate(KEYS, 5, () => { for (const i of order) sink += (m.get(keys[i]!) as string).length; }) });
  if (m.get(keys[5]!) !== values[5]) throw new Error('luo.map read back a wrong value');
  const mc = luo.map('bench-cached', { cache: true });
  rates.push({ store: 'luo.map', note: 'cache: true', op: 'set', opsPerSec: rate(KEYS, 5, () => { for (const i of order) mc.set(keys[i]!, values[i]!); }) });
  mc.setCache(0); // the gets below start from preserved memory, as after an update
  mc.setCache(Infinity);
  rates.push({ store: 'luo.map', note: 'cache: true', op: 'get', opsPerSec: rate(KEYS, 5, () => { for (const i of order) sink += (mc.get(keys[i]!) as string).length; }) });

  const redisBin = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
  if (!redisBin) {
    skipped.redis = 'redis-server is not installed (Debian: apt install redis-server)';
    return { rates, skipped };
  }
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luo-bench-redis-'));
  const server = spawn(redisBin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    // Ready when it says so (not after a guess).
    await new Promise<void>((resolve, reject) => {
      let out = '';
      server.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('Ready to accept connections')) resolve();
      });
      server.once('exit', (c) => reject(new Error(`redis-server exited (${c}): ${out.slice(-300)}`)));
    });
    server.stdout!.resume();
    await redis.connect();
    const version = String((await redis.info('server')).match(/redis_version:(\S+)/)?.[1]);
    const one = Math.min(KEYS, 20_000); // one at a time: a round trip each
    const timeAsync = async (n: number, f: () => Promise<void>): Promise<number> => {
      const xs: number[] = [];
      for (let r = 0; r < 3; r++) {
        const t = now();
        await f();
        xs.push(n / ((now() - t) / 1000));
      }
      return Math.round(Math.max(...xs));
    };
    rates.push({ store: `Redis ${version}`, op: 'set', note: 'one command at a time', opsPerSec: await timeAsync(one, async () => { for (let k = 0; k < one; k++) await redis.set(keys[order[k]!]!, values[order[k]!]!); }) });
    rates.push({ store: `Redis ${version}`, op: 'get', note: 'one command at a time', opsPerSec: await timeAsync(one, async () => { for (let k = 0; k < one; k++) sink += (await redis.get(keys[order[k]!]!))!.length; }) });
    const piped = async (op: 'set' | 'get'): Promise<void> => {
      for (let k = 0; k < KEYS; k += 1000) {
        const p = redis.pipeline();
        for (let j = k; j < Math.min(KEYS, k + 1000); j++) {
          const i = order[j]!;
          if (op === 'set') p.set(keys[i]!, values[i]!);
          else p.get(keys[i]!);
        }
        const res = await p.exec();
        if (op === 'get') sink += res!.length;
      }
    };
    rates.push({ store: `Redis ${version}`, op: 'set', note: 'pipelined, 1 000 per batch', opsPerSec: await timeAsync(KEYS, () => piped('set')) });
    rates.push({ store: `Redis ${version}`, op: 'get', note: 'pipelined, 1 000 per batch', opsPerSec: await timeAsync(KEYS, () => piped('get')) });
    // One MGET of 1 000 keys: not pipelining, a batch command; the fastest way Redis reads.
    rates.push({ store: `Redis ${version}`, op: 'get', note: 'MGET of 1 000 keys', opsPerSec: await timeAsync(KEYS, async () => { for (let k = 0; k < KEYS; k += 1000) sink += (await redis.mget(keys.slice(k, k + 1000))).length; }) });
  } finally {
    redis.disconnect();
    server.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (sink < 0) log(String(sink));
  return { rates, skipped };
}

interface Restore { what: 'map' | 'keep'; bytes: number; mode: 'in place' | 'successor'; entries: number; restoreMs: number; saveMs: number | null; sampleOk: boolean }

/** Fill a service to `bytes`, update it in place then --successor; what the next versions took. */
async function restores(what: 'map' | 'keep', bytes: number): Promise<Restore[]> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `luo-bench-state-${what}-`));
  const rundir = path.join(tmp, 'run');
  const cmd = [process.execPath, '--max-old-space-size=12288', IMAGE, '--what', what, '--bytes', String(bytes)];
  const p = new Proc(spawn(cmd[0]!, cmd.slice(1), { cwd: root, env: { ...process.env, LUO_RUNDIR: rundir }, stdio: ['ignore', 'pipe', 'inherit'] }));
  const out: Restore[] = [];
  try {
    await p.wait((l) => l.event === 'ready');
    while (!fs.existsSync(path.join(rundir, 'liveupdate'))) await sleep(10);
    for (const successor of [false, true]) {
      const before = p.lines.length;
      const r = await run(process.execPath, [CLI, 'update', '--rundir', rundir, '--json', '--timeout', '300', ...(successor ? ['--successor'] : []), '--', ...cmd], {}, 600_000);
      const rep = JSON.parse(r.out.trim().split('\n').filter((l) => l.startsWith('{')).pop() ?? '{}') as { ok?: boolean; error?: string };
      if (!rep.ok) throw new Error(`luo update failed: ${rep.error ?? r.out.slice(-300)}`);
      const ready = await p.wait((l) => p.lines.indexOf(l) >= before && l.event === 'ready' && l.updated);
      const saved = p.lines.slice(before).find((l) => l.event === 'saved');
      out.push({ what, bytes, mode: successor ? 'successor' : 'in place', entries: ready.entries as number, restoreMs: ready.restoreMs as number, saveMs: (saved?.saveMs as number | undefined) ?? null, sampleOk: ready.sampleOk as boolean });
      log(`  ${what} ${fmt(bytes)}, ${successor ? 'successor' : 'in place'}: ${(ready.entries as number).toLocaleString('en')} entries back in ${ready.restoreMs} ms${saved ? `, saved in ${saved.saveMs} ms` : ''}, sample ${ready.sampleOk ? 'ok' : 'WRONG'}`);
      while (!fs.existsSync(path.join(rundir, 'liveupdate'))) await sleep(10);
    }
  } finally {
    p.killAll(rundir);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return out;
}

const fmt = (b: number): string => (b >= 1e9 ? `${b / 1e9} GB` : `${b / 1e6} MB`);

async function main(): Promise<void> {
  const t0 = now();
  const m = machine();
  log(`bench:state: ${JSON.stringify(m)}`);
  const { rates, skipped } = await throughput();
  for (const r of rates) log(`  ${r.store} ${r.op}${r.note ? ` (${r.note})` : ''}: ${r.opsPerSec.toLocaleString('en')} ops/s`);
  const rs: Restore[] = [];
  for (const what of opt('what', 'map,keep').split(',') as Array<'map' | 'keep'>) for (const b of SIZES) for (let k = 0; k < (what === 'map' ? REPS : 1); k++) rs.push(...(await restores(what, b)));
  const result = { date: today, command: `npm run bench:state${argv.length ? ` -- ${argv.join(' ')}` : ''}`, machine: m, durationS: Math.round((now() - t0) / 1000), settings: { keys: KEYS, valueBytes: 100, sizes: SIZES }, skipped, rates, restores: rs };
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, `${JSON.stringify(result, null, 1)}\n`);
  log(`results: ${path.relative(root, OUT)}`);
  if (!argv.includes('--no-docs')) writeDocs(result);
}

function writeDocs(res: { date: string; command: string; machine: Record<string, unknown>; durationS: number; skipped: Record<string, string>; rates: Rate[]; restores: Restore[] }): void {
  const m = res.machine;
  const get = (s: string, note?: string): number | undefined => res.rates.find((r) => r.store.startsWith(s) && r.op === 'get' && (note === undefined || r.note?.startsWith(note)))?.opsPerSec;
  const luoGet = res.rates.find((r) => r.store === 'luo.map' && r.op === 'get' && !r.note)!.opsPerSec;
  const luoCached = res.rates.find((r) => r.store === 'luo.map' && r.op === 'get' && r.note === 'cache: true')?.opsPerSec;
  const jsGet = get('JS Map')!;
  const redisPiped = get('Redis', 'pipelined');
  const rows = ['| store | set ops/s | get ops/s |', '|---|---|---|'];
  for (const key of [...new Set(res.rates.map((r) => `${r.store}|${r.note ?? ''}`))]) {
    const [store, note] = key.split('|');
    const f = (op: string): string => res.rates.find((r) => r.store === store && (r.note ?? '') === note && r.op === op)?.opsPerSec.toLocaleString('en') ?? '—';
    rows.push(`| ${store}${note ? ` (${note})` : ''} | ${f('set')} | ${f('get')} |`);
  }
  const restoreRows = ['| state | what | update | entries | next version restores in (ms) | old version saves at FREEZE in (ms) | MB/s (save / restore) |', '|---|---|---|---|---|---|---|'];
  const groups = new Map<string, Restore[]>();
  for (const r of res.restores) groups.set(`${r.what}|${r.bytes}|${r.mode}`, [...(groups.get(`${r.what}|${r.bytes}|${r.mode}`) ?? []), r]);
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
  const agg: Restore[] = [...groups.values()].map((rs) => ({ ...rs[0]!, restoreMs: med(rs.map((r) => r.restoreMs)), saveMs: rs[0]!.saveMs === null ? null : med(rs.map((r) => r.saveMs!)), sampleOk: rs.every((r) => r.sampleOk) }));
  for (const r of agg) {
    const mbs = (ms: number | null): string => (ms ? `${Math.round(r.bytes / 1e6 / (ms / 1000)).toLocaleString('en')}` : '—');
    restoreRows.push(`| ${fmt(r.bytes)} | ${r.what === 'map' ? 'luo.map' : 'luo.keep'} | ${r.mode} | ${r.entries.toLocaleString('en')} | ${r.restoreMs.toFixed(3)}${groups.get(`${r.what}|${r.bytes}|${r.mode}`)!.length > 1 ? ` (median of ${groups.get(`${r.what}|${r.bytes}|${r.mode}`)!.length}: ${groups.get(`${r.what}|${r.bytes}|${r.mode}`)!.map((x) => x.restoreMs.toFixed(1)).join(', ')})` : ''} | ${r.saveMs === null ? '—' : r.saveMs.toFixed(1)} | ${r.what === 'keep' ? `${mbs(r.saveMs)} / ${mbs(r.restoreMs)}` : '—'} |`);
  }
  const mapR = agg.filter((r) => r.what === 'map');
  const SIZES = (res as unknown as { settings: { sizes: number[] } }).settings.sizes;
  const KEYS = (res as unknown as { settings: { keys: number } }).settings.keys;
  const OUT = from || opt('out', path.join(root, 'bench', 'results', `state-${res.date}.json`));
  const section = [
    `${res.date}, \`${res.command}\` (${res.durationS} s), on ${String(m.cores)} × ${String(m.cpu)}, ${String(m.memGiB)} GiB, Linux ${String(m.kernel)}, Node ${String(m.node)}. Raw figures: \`bench/results/${path.basename(OUT)}\`.`,
    '',
    `Throughput, ${KEYS.toLocaleString('en')} keys of 10 bytes, values of 100 bytes, in a fixed non-sequential order, best of 5 passes (Redis: 3):`,
    '',
    rows.join('\n'),
    '',
    `luo.map gets: ${(luoGet / jsGet).toFixed(2)}× a JS Map's rate (target: at least 1/3)${redisPiped ? `, ${(luoGet / redisPiped).toFixed(1)}× Redis pipelined (target: at least 20×)` : ''}; with \`cache: true\`${luoCached ? ` ${(luoCached / jsGet).toFixed(2)}× a JS Map${redisPiped ? `, ${(luoCached / redisPiped).toFixed(1)}× Redis pipelined` : ''}` : ''}. Without the cache every get decodes its value from preserved memory: two random reads (the index slot, the entry) in memory mapped with 4 KiB pages, where a JS Map's entries sit in the JS heap. With it, strings and numbers read or written are kept on the JS heap as well (the memory of a JS Map); the next version starts with it empty.`,
    ...Object.entries(res.skipped).map(([k, v]) => `\nSkipped: ${k}: ${v}`),
    '',
    'Restore after an update (luo.map: `luo.map(name)` in the next version, every entry there; luo.keep: `v8.deserialize` and load; a sample of 1 000 entries checked each time):',
    '',
    restoreRows.join('\n'),
    '',
    SIZES.length > 1 ? `luo.map restore, ${fmt(SIZES.at(-1)!)} against ${fmt(SIZES[0]!)} (target: within 1 ms): ${(['successor', 'in place'] as const).map((mode) => { const a = mapR.find((r) => r.bytes === SIZES.at(-1) && r.mode === mode)!.restoreMs; const b = mapR.find((r) => r.bytes === SIZES[0] && r.mode === mode)!.restoreMs; return `${mode} ${a.toFixed(3)} against ${b.toFixed(3)} ms (+${(a - b).toFixed(3)})`; }).join(', ')}. In place the next image makes its views of the arena's segments as it opens the map, and V8, counting that much new external memory, runs full collections (seen with \`--trace-gc\`: Mark-Compact, ~5 ms at 1 GB); a successor maps and pins the arena before the handover, while the old version serves. luo.keep's cost grows with the value and is paid inside the pause (save at FREEZE) and at the next version's start (load): use it for what is small or rarely updated, luo.map for what is big.` : '',
  ].join('\n');
  writeDocSection('state', `State: luo.map and luo.keep beside a JS Map and Redis (\`npm run bench:state\`)`, section);
  log('docs/benchmarks.md regenerated');
}

const from = opt('docs-from', '');
(from ? Promise.resolve(writeDocs(JSON.parse(fs.readFileSync(from, 'utf8')))) : main()).catch((e) => {
  log(`bench:state: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
