/*
 * Test image A: fills 64 MiB and several small regions with a pattern, preserves them, adds
 * two subtrees, also dirties 16 MiB it does NOT preserve, finalizes and execs image B.
 * Prints one JSON line before exec. Env: KHO_TEST_NEXT (script to exec, default kho-b.js),
 * KHO_TEST_CORRUPT (root|subtree|compat: damage the handover before exec).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FdtNode, encode } from '../../src/fdt/index.js';
import { bootKho, kexec, PAGE_SIZE } from '../../src/handover/kho.js';
import { fillPattern } from '../../src/util/pattern.js';

const kho = bootKho({ arenaSize: 4 * 2 ** 30, debugDir: process.env.KHO_TEST_DEBUG });
const BIG = 64 * 2 ** 20;
const big = kho.allocPreserve(BIG);
fillPattern(kho.view(big, BIG), big, 1);
const smalls: Array<[number, number]> = [];
for (let i = 1; i <= 5; i++) {
  const size = PAGE_SIZE * i;
  const a = kho.alloc(size);
  kho.preservePhys(a, size);
  fillPattern(kho.view(a, size), a, 100 + i);
  smalls.push([a, size]);
}
const folio = kho.allocFolio(3);
kho.preserveFolio(folio, 3);
fillPattern(kho.view(folio, PAGE_SIZE * 8), folio, 7);
// Scratch memory the next image must NOT get: dirty it so the arena really holds it.
const scratch = kho.alloc(16 * 2 ** 20);
kho.view(scratch, 16 * 2 ** 20).fill(0xee);

const one = new FdtNode('');
one.setString('compatible', 'test-one-v1').setU64('big', big).setU64('folio', folio);
one.setU64Array('smalls', smalls.flat());
const two = new FdtNode('');
two.setStringList('compatible', ['test-two-v1', 'test-generic']);
two.addChild('child@1').setU32('value', 0xdeadbeef);
const oneAddr = kho.storeFdt(one);
kho.addSubtree('one', oneAddr);
kho.addSubtree('two', kho.storeFdt(two));
kho.finalize();

const corrupt = process.env.KHO_TEST_CORRUPT;
if (corrupt) {
  const [, , root, size] = kho.handover().split(':').map((x, i) => (i >= 2 ? Number(x) : x)) as [string, string, number, number];
  if (corrupt === 'root') kho.view(root, 4).set([0xde, 0xad, 0xbe, 0xef]);
  if (corrupt === 'truncate') kho.view(root + 4, 4).set([0x7f, 0xff, 0xff, 0xff]);
  if (corrupt === 'subtree') kho.view(oneAddr, 4).fill(0);
  if (corrupt === 'compat') {
    const blob = encode(new FdtNode('').setString('compatible', 'kho-v9'));
    if (blob.length > size) throw new Error('too big');
    kho.view(root, blob.length).set(blob);
  }
}

console.log(JSON.stringify({ pid: process.pid, big, smalls, folio, allocatedBefore: kho.arena.allocatedBytes(), preserved: kho.preservedBytes }));
const next = process.env.KHO_TEST_NEXT ?? path.join(path.dirname(fileURLToPath(import.meta.url)), 'kho-b.js');
kexec(kho, { file: process.execPath, argv: [process.execPath, next] });
