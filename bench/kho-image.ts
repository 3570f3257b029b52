/*
 * Benchmark image for bench/kho.ts. "first SIZE": preserve SIZE bytes (every page written),
 * finalize, stamp the monotonic clock, exec "second". "second": boot KHO from the handover,
 * read the first and last preserved byte, print {usableMs, bootMs} as JSON.
 * "floor": exec `node -e` printing the clock at its first line (the `node -e 0` floor).
 */
import { bootKho, kexec } from '../src/handover/kho.js';
import { FdtNode } from '../src/fdt/index.js';

const [mode, arg] = process.argv.slice(2);
if (mode === 'first' || mode === 'floor') {
  const kho = bootKho({ arenaSize: 4 * 2 ** 30 });
  const size = Number(arg);
  const addr = kho.allocPreserve(size);
  for (let off = 0; off < size; off += 2 ** 30) {
    const v = kho.view(addr + off, Math.min(2 ** 30, size - off));
    for (let i = 0; i < v.length; i += 4096) v[i] = 0x5a; // every page really allocated
  }
  kho.view(addr + size - 1, 1)[0] = 0xa5;
  kho.addSubtree('bench', kho.storeFdt(new FdtNode('').setU64('addr', addr).setU64('size', size)));
  kho.finalize();
  const t0 = String(process.hrtime.bigint());
  if (mode === 'floor') {
    kexec(kho, { file: process.execPath, argv: [process.execPath, '-e', `const t=process.hrtime.bigint();console.log(JSON.stringify({usableMs:Number(t-${t0}n)/1e6}))`] });
  }
  kexec(kho, { file: process.execPath, argv: [process.execPath, process.argv[1]!, 'second'], env: { ...process.env, BENCH_T0: t0 } });
} else {
  const tImport = process.hrtime.bigint();
  const kho = bootKho({ arenaSize: 4 * 2 ** 30 });
  const meta = kho.readFdt(kho.retrieveSubtree('bench')).root;
  const addr = Number(meta.requireU64('addr'));
  const size = Number(meta.requireU64('size'));
  const ok = kho.view(addr, 1)[0] === 0x5a && kho.view(addr + size - 1, 1)[0] === 0xa5;
  const t = process.hrtime.bigint();
  const t0 = BigInt(process.env.BENCH_T0!);
  console.log(JSON.stringify({ usableMs: Number(t - t0) / 1e6, bootMs: Number(t - tImport) / 1e6, ok }));
}
