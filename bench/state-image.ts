/*
 * bench/state-image: the service `npm run bench:state` updates (bench/state.ts). A cold start
 * fills its state to --bytes: `--what map`, a luo.map of 100-byte string values; `--what keep`,
 * a JS Map of 100-byte strings carried by luo.keep. The next version times what brings the
 * state back (luo.map(name), or luo.keep's deserialize and load) and checks a sample of it.
 * Lines: {event:'filled'}, {event:'ready', restoreMs, entries, sampleOk}, and from the old
 * version {event:'saved', saveMs} (the "luo-state" subsystem's freeze, timed by subsystems
 * registered around it).
 */
import { boot, startDevice, State } from 'luo';

const argv = process.argv.slice(2);
const opt = (n: string, d: string): string => {
  const i = argv.indexOf(`--${n}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : d;
};
const what = opt('what', 'map');
const bytes = Number(opt('bytes', '10e6'));
const say = (o: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const VALUE = 100;
// A luo.map entry of a 10-character key and a 100-byte value takes 144 bytes in its segment.
const entries = Math.floor(bytes / (what === 'map' ? 144 : VALUE + 16));
const value = (i: number): string => `${i}:`.padEnd(VALUE, 'v');

const luo = boot();
let saveT0 = 0;
await luo.registerSubsystem({ name: 'before-state', freeze: () => void (saveT0 = performance.now()) });
const updated = luo.state === State.UPDATED;
let restoreMs = 0;
let n = 0;
let sampleOk = true;
let kept: Map<string, string> | null = null;
const t0 = performance.now();
if (what === 'map') {
  const m = luo.map('bench');
  restoreMs = performance.now() - t0;
  if (!updated) for (let i = 0; i < entries; i++) m.set(`key${String(i).padStart(7, '0')}`, value(i));
  n = m.size;
  for (let i = 0; i < entries; i += Math.max(1, Math.floor(entries / 1000))) if (m.get(`key${String(i).padStart(7, '0')}`) !== value(i)) sampleOk = false;
} else {
  luo.keep('bench', { save: () => kept, load: (v) => void (kept = v as Map<string, string>) });
  restoreMs = performance.now() - t0;
  if (!updated) {
    kept = new Map();
    for (let i = 0; i < entries; i++) kept.set(`key${String(i).padStart(7, '0')}`, value(i));
  }
  n = kept!.size;
  for (let i = 0; i < entries; i += Math.max(1, Math.floor(entries / 1000))) if (kept!.get(`key${String(i).padStart(7, '0')}`) !== value(i)) sampleOk = false;
}
await luo.registerSubsystem({ name: 'after-state', freeze: () => void say({ event: 'saved', saveMs: Math.round((performance.now() - saveT0) * 1000) / 1000 }) });
startDevice(luo);
say({ event: 'ready', updated, pid: process.pid, restoreMs: Math.round(restoreMs * 1000) / 1000, entries: n, sampleOk });
