/*
 * Test image B (a different script from A): boots from the handover and reports, as one JSON
 * line, what it found: pid, every region checked byte by byte, both subtrees, the arena's
 * allocated bytes. Env LUO_ON_CORRUPT is honoured (panic or cold).
 */
import { bootKho, PAGE_SIZE } from '../../src/handover/kho.js';
import { checkPattern } from '../../src/util/pattern.js';

const kho = bootKho({ arenaSize: 4 * 2 ** 30, onCorrupt: (process.env.LUO_ON_CORRUPT as 'cold') ?? 'panic', debugDir: process.env.KHO_TEST_DEBUG });
const out: Record<string, unknown> = { pid: process.pid, bootedFrom: kho.bootedFrom, handoverEnvGone: process.env.LUO_HANDOVER === undefined };
if (kho.bootedFrom === 'handover') {
  const one = kho.readFdt(kho.retrieveSubtree('one')).root;
  const two = kho.readFdt(kho.retrieveSubtree('two')).root;
  const big = Number(one.requireU64('big'));
  const folio = Number(one.requireU64('folio'));
  const smalls = one.u64Array('smalls')!.map(Number);
  const bad: string[] = [];
  if (checkPattern(kho.view(big, 64 * 2 ** 20), big, 1) >= 0) bad.push('big');
  for (let i = 0; i < smalls.length; i += 2) if (checkPattern(kho.view(smalls[i]!, smalls[i + 1]!), smalls[i]!, 100 + i / 2 + 1) >= 0) bad.push(`small${i / 2}`);
  if (checkPattern(kho.view(folio, PAGE_SIZE * 8), folio, 7) >= 0) bad.push('folio');
  out.bad = bad;
  out.one = one.string('compatible');
  out.two = two.stringList('compatible');
  out.twoChild = two.lookup('/child@1')?.u32('value');
  out.folioOrder = kho.restoreFolio(folio);
  out.allocatedAfter = kho.arena.allocatedBytes();
  try {
    kho.retrieveSubtree('three');
  } catch (e) {
    out.missing = (e as { code: string }).code;
  }
  // The allocator must never hand out a handed-over page.
  const fresh = kho.alloc(8 * 2 ** 20);
  out.freshOverlaps = [[big, 64 * 2 ** 20], ...Array.from({ length: smalls.length / 2 }, (_, i) => [smalls[2 * i]!, smalls[2 * i + 1]!])].some(([a, s]) => fresh < a! + s! && a! < fresh + 8 * 2 ** 20);
}
console.log(JSON.stringify(out));
