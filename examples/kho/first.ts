/*
 * The smallest true live update, image 1 of 2 (what `npm start` runs until the full demo).
 * Fills preserved memory with a pattern (and some scratch memory it does not preserve),
 * records it in a subtree, finalizes KHO and execs
 * image 2 (second.ts) in the same pid. Options: --mib N (default 256).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FdtNode } from '../../src/fdt/index.js';
import { bootKho, kexec, PAGE_SIZE } from '../../src/handover/kho.js';
import { fillPattern } from '../../src/util/pattern.js';

const arg = process.argv.indexOf('--mib');
const mib = arg > 0 ? Number(process.argv[arg + 1]) : 256;
if (!Number.isInteger(mib) || mib <= 0) {
  console.error('usage: first.js [--mib N]');
  process.exit(2);
}
const SEED = 0x5eed1e55;
const kho = bootKho({ arenaSize: 64 * 2 ** 30 });
const size = mib * 2 ** 20;

let t = performance.now();
const big = kho.allocPreserve(size);
for (let off = 0; off < size; off += 2 ** 30) {
  const len = Math.min(2 ** 30, size - off);
  fillPattern(kho.view(big + off, len), big + off, SEED);
}
const small: number[] = [];
for (let i = 0; i < 8; i++) {
  const a = kho.allocPreserve(PAGE_SIZE * (i + 1));
  fillPattern(kho.view(a, PAGE_SIZE * (i + 1)), a, SEED + i);
  small.push(a);
}
// Working memory this image does NOT preserve: the next image must not get it.
const scratch = kho.alloc(64 * 2 ** 20);
kho.view(scratch, 64 * 2 ** 20).fill(0xee);
const fillMs = performance.now() - t;

const meta = new FdtNode('');
meta.setString('compatible', 'luo-demo-v1');
meta.setU64('big', big).setU64('big-size', size).setU32('seed', SEED);
meta.setU64Array('small', small);
kho.addSubtree('demo', kho.storeFdt(meta));
kho.finalize();

console.log(`image 1 (pid ${process.pid}): filled ${mib} MiB + 8 small regions (preserved) and 64 MiB of scratch (not preserved) in ${fillMs.toFixed(0)} ms; arena holds ${(kho.arena.allocatedBytes() / 2 ** 20).toFixed(1)} MiB; exec…`);
const next = path.join(path.dirname(fileURLToPath(import.meta.url)), 'second.js');
kexec(kho, { file: process.execPath, argv: [process.execPath, next], env: { ...process.env, LUO_DEMO_T0: String(process.hrtime.bigint()), LUO_DEMO_PID: String(process.pid) } });
