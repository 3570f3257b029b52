/*
 * A service whose state is luo.map and luo.keep, updated by the real agent (test/state-*.test.ts).
 * Each image is one generation: a cold start fills generation 0; every next image checks
 * every entry against what generation g-1 must hold (a pure function of the key and the
 * generation: no copy of the state outside preserved memory), then applies generation g's
 * changes: deletes, overwrites with longer values, new keys (the map grows). It says
 * {event:'listening', port, pid, gen, ...} once its device is up.
 *
 * env (the whole service's: a next image gets the previous one's environment):
 *   STATE_N           entries of generation 0 (default 1000); G = STATE_N / 100 new per generation
 *   STATE_RACE=1      write map "race" without pause (keys r0..r999 round-robin, values that
 *                     say their own length), and report the writes refused once frozen
 * arguments (this image's own):
 *   format=N          the data format this code reads (1: values as strings; 2: as
 *                     { i, w, pad } objects, with a migration from 1)
 *   fail=after-migrate  throw after luo.map migrated, before FINISH
 *   damage            once FROZEN, a byte of map "kv"'s header flips
 *   fresh             open a damaged map empty (onDamaged: 'fresh') instead of failing
 *   against=N         check "kv" against generation N (default: the one before this one)
 *   verify-only       check, change nothing
 * SIGUSR2: check "kv" again now and say {event:'check', ok, ...} (a resumed old version).
 */
import http from 'node:http';
import type net from 'node:net';
import { boot, LuoError, startDevice, State, type PreservedMap } from 'luo';

const luo = boot();
const say = (o: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const N = Number(process.env.STATE_N ?? 1000);
const G = Math.max(1, Math.floor(N / 100));
const arg = (name: string): string | undefined => process.argv.slice(2).find((a) => a === name || a.startsWith(`${name}=`))?.split('=')[1] ?? (process.argv.includes(name) ? '' : undefined);
const FORMAT = Number(arg('format') ?? 1);
const gen = luo.state === State.UPDATED ? luo.liveupdateNumber : 0;

// ------------------------------------------------------------------ the model
const bornOf = (i: number): number => (i < N ? 0 : Math.floor((i - N) / G) + 1);
/** Whether key i exists after generation g's changes. */
const exists = (i: number, g: number): boolean => {
  if (i >= N + g * G) return false;
  const d = i % 97;
  return !(d > bornOf(i) && d <= g);
};
/** The generation that last wrote key i, by generation g. */
const lastWrite = (i: number, g: number): number => {
  const b = bornOf(i);
  let w = b;
  for (let x = b + 1; x <= g; x++) if (x % 5 === i % 5) w = x;
  return w;
};
const pad = (w: number): string => 'x'.repeat(20 + w * 15);
const v1 = (i: number, w: number): string => `v${i}:${w}:${pad(w)}`;
const v2 = (i: number, w: number): { i: number; w: number; pad: string } => ({ i, w, pad: pad(w) });
const key = (i: number): string => `k${i}`;

function check(m: PreservedMap, g: number, format: number): { ok: boolean; size: number; expected: number; bad: string[] } {
  const bad: string[] = [];
  let expected = 0;
  for (let i = 0; i < N + g * G; i++) {
    const got = m.get(key(i));
    if (!exists(i, g)) {
      if (got !== undefined && bad.length < 5) bad.push(`${key(i)} should be gone`);
      continue;
    }
    expected++;
    const w = lastWrite(i, g);
    const want = format === 1 ? v1(i, w) : v2(i, w);
    const same = format === 1 ? got === want : JSON.stringify(got) === JSON.stringify(want);
    if (!same && bad.length < 5) bad.push(`${key(i)}: ${JSON.stringify(got)?.slice(0, 80)}`);
  }
  if (m.size !== expected) bad.push(`size ${m.size}, expected ${expected}`);
  return { ok: bad.length === 0, size: m.size, expected, bad };
}

function apply(m: PreservedMap, g: number, format: number): void {
  const val = format === 1 ? v1 : v2;
  if (g === 0) {
    for (let i = 0; i < N; i++) m.set(key(i), val(i, 0));
    return;
  }
  for (let i = 0; i < N + (g - 1) * G; i++) {
    if (!exists(i, g - 1)) continue;
    if (i % 97 === g) m.delete(key(i));
    else if (i % 5 === g % 5) m.set(key(i), val(i, g));
  }
  for (let i = N + (g - 1) * G; i < N + g * G; i++) m.set(key(i), val(i, g));
}

// ------------------------------------------------------------------ the state
const report: Record<string, unknown> = { gen, format: FORMAT };
let kv: PreservedMap | null = null;
try {
  kv = luo.map('kv', {
    version: FORMAT,
    onDamaged: arg('fresh') !== undefined ? 'fresh' : 'throw',
    migrate: {
      1: (m) => {
        // Format 1 → 2: each "v<i>:<w>:<pad>" string becomes { i, w, pad }.
        let n = 0;
        for (const [k, v] of m) {
          const [, i, w, p] = /^v(\d+):(\d+):(x*)$/.exec(v as string)!;
          m.set(k, { i: Number(i), w: Number(w), pad: p });
          n++;
        }
        report.migrated = n;
      },
    },
  });
} catch (e) {
  report.mapError = { code: (e as LuoError).code, message: (e as Error).message };
}
if (kv) {
  report.version = kv.version;
  const against = arg('against');
  if (gen > 0) report.check = arg('fresh') !== undefined ? { size: kv.size } : check(kv, against !== undefined ? Number(against) : gen - 1, FORMAT);
  if (arg('fail') === 'after-migrate') throw new Error('state-service: failing after the migration');
  if (arg('verify-only') === undefined) apply(kv, gen, FORMAT);
  report.stats = kv.stats();
}

// A second map, independent: counters, each generation adds one to all of them.
const counters = luo.map('counters');
if (gen === 0) for (let i = 0; i < 100; i++) counters.set(`c${i}`, 0);
report.counters = [...Array(100).keys()].every((i) => counters.get(`c${i}`) === gen) && counters.size === 100;
for (let i = 0; i < 100; i++) counters.set(`c${i}`, gen + 1);

// A kept value: nested, with a Map, a Set, Dates, typed arrays and a bigint.
let kept: { gen: number; m: Map<string, { at: Date; tags: Set<string> }>; bytes: Float64Array; big: bigint; nested: { deep: number[][] } } = {
  gen, m: new Map([['a', { at: new Date(Date.UTC(2026, 11, 2)), tags: new Set(['x', 'y']) }]]), bytes: new Float64Array([1.5, -2, Math.PI]), big: 2n ** 70n, nested: { deep: [[1, 2], [3]] },
};
let loaded: typeof kept | null = null;
luo.keep('session-cache', { save: () => ({ ...kept, gen: gen + 1 }), load: (v) => void (loaded = v as typeof kept) });
if (gen > 0) {
  const l = loaded as typeof kept | null;
  report.keep = l !== null && l.gen === gen && l.m instanceof Map && l.m.get('a')!.at instanceof Date && l.m.get('a')!.at.getTime() === Date.UTC(2026, 11, 2)
    && l.m.get('a')!.tags instanceof Set && l.m.get('a')!.tags.has('y') && l.bytes instanceof Float64Array && l.bytes[2] === Math.PI && l.big === 2n ** 70n
    && JSON.stringify(l.nested) === '{"deep":[[1,2],[3]]}';
  if (l) kept = l;
}

// Writes racing the freeze.
if (process.env.STATE_RACE === '1') {
  const race = luo.map('race');
  if (gen > 0) {
    // Every value whole, and the seqs exactly the last 1 000 written (none lost, none torn).
    const seqs: number[] = [];
    let torn = 0;
    for (const [k, v] of race) {
      const m = /^(\d+):(\d+):(y*)$/.exec(v as string);
      if (!m || m[3]!.length !== Number(m[2]) || `r${Number(m[1]) % 1000}` !== k) torn++;
      else seqs.push(Number(m[1]));
    }
    seqs.sort((a, b) => a - b);
    report.race = { torn, entries: race.size, consecutive: seqs.length === 1000 && seqs.every((s, i) => i === 0 || s === seqs[i - 1]! + 1), last: seqs.at(-1) ?? -1 };
  }
  let seq = (report.race as { last?: number } | undefined)?.last ?? -1;
  let refused = 0;
  const write = (): void => {
    for (let k = 0; k < 200; k++) {
      const s = seq + 1;
      const len = (s * 37) % 300;
      try {
        race.set(`r${s % 1000}`, `${s}:${len}:${'y'.repeat(len)}`);
        seq = s;
      } catch (e) {
        if ((e as LuoError).code !== 'EBUSY') throw e;
        if (refused++ === 0) say({ event: 'refused', code: (e as LuoError).code, seq });
        setTimeout(write, 2); // frozen: no spinning while the next version starts
        return;
      }
    }
    setImmediate(write);
  };
  write();
  // A freeze that takes a while, as one draining connections does: the writer runs meanwhile.
  await luo.registerSubsystem({ name: 'slow-freeze', freeze: () => new Promise<void>((r) => setTimeout(r, 50)) });
  // Once FROZEN: one write tried at once, as a timer of the application's would (refused).
  luo.on('state', (st: number) => {
    if (st !== State.FROZEN) return;
    try {
      race.set('late', 'x');
      say({ event: 'late-write', accepted: true });
    } catch (e) {
      say({ event: 'late-write', code: (e as LuoError).code, message: (e as Error).message });
    }
  });
}

if (arg('damage') !== undefined) {
  // Once FROZEN (the header's checksum written), a byte of it flips: the entry count.
  luo.on('state', (st: number) => {
    if (st === State.FROZEN && kv) luo.view(kv.address, 4096)[16] ^= 0x40;
  });
}

process.on('SIGUSR2', () => {
  if (kv) say({ event: 'check', pid: process.pid, version: kv.version, ...check(kv, gen, kv.version) });
});

const server = http.createServer((_req, res) => res.end(`gen ${gen}\n`));
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
startDevice(luo);
say({ event: 'listening', port: (server.address() as net.AddressInfo).port, pid: process.pid, v: `gen${gen}`, ...report });
