/*
 * Generation 1: a 1 GiB memfd, one page every 8 MiB written with a pattern (sampling),
 * preserved; reboot. Generation 2: restores it, times the restore, checks size, position and
 * every sampled page through the zero-copy view, and prints JSON.
 */
import fs from 'node:fs';
import { boot, Memfd, State } from '../../src/index.js';
import { checkPattern, fillPattern } from '../../src/util/pattern.js';

const GiB = 2 ** 30;
const STEP = 8 * 2 ** 20;
const luo = boot({ arenaSize: 2 ** 28 });
if (luo.state !== State.UPDATED) {
  const m = Memfd.create('big', GiB);
  const page = new Uint8Array(4096);
  for (let off = 0; off < GiB; off += STEP) {
    fillPattern(page, off, 99);
    m.write(page, off);
  }
  fs.readSync(m.fd, Buffer.alloc(100), 0, 100, null); // position 100
  luo.preserveFile(1, m);
  await luo.prepare();
  await luo.reboot({ file: process.execPath, argv: [process.execPath, process.argv[1]!] });
} else {
  const t = process.hrtime.bigint();
  const m = await luo.restoreFile<Memfd>(1);
  const restoreMs = Number(process.hrtime.bigint() - t) / 1e6;
  let bad = 0;
  let samples = 0;
  for (let off = 0; off < GiB; off += STEP) {
    samples++;
    if (checkPattern(m.view(off, 4096), off, 99) !== -1) bad++;
  }
  // The file offset was 100 when the old image exec'd: a read at the current position must
  // return bytes 100..103 of the first page.
  const expected = new Uint8Array(4096);
  fillPattern(expected, 0, 99);
  const got = Buffer.alloc(4);
  fs.readSync(m.fd, got, 0, 4, null);
  const positionKept = got.equals(Buffer.from(expected.subarray(100, 104)));
  console.log(JSON.stringify({ size: m.size, samples, bad, restoreMs, positionKept, frozen: m.frozen }));
  await luo.finish();
}
