// Every KHO error, with the kernel's errno (reference §5.1).
import assert from 'node:assert/strict';
import test from 'node:test';
import { FdtNode } from '../src/fdt/index.js';
import { Kho, PAGE_SIZE } from '../src/kho/index.js';

const mk = (enabled = true): Kho => Kho.create({ arenaSize: 256 * 2 ** 20, enabled });
const code = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    return (e as { code: string }).code;
  }
  return 'no error';
};

test('preservePhys: unaligned address or size is EINVAL', () => {
  const k = mk();
  const a = k.alloc(2 * PAGE_SIZE);
  assert.equal(code(() => k.preservePhys(a + 1, PAGE_SIZE)), 'EINVAL');
  assert.equal(code(() => k.preservePhys(a, PAGE_SIZE + 1)), 'EINVAL');
  assert.equal(code(() => k.preservePhys(a, 0)), 'EINVAL');
  assert.equal(code(() => k.preservePhys(0, PAGE_SIZE)), 'EINVAL', 'address 0 is reserved');
  assert.equal(code(() => k.preservePhys(k.arena.size, PAGE_SIZE)), 'EINVAL', 'outside the arena');
});

test('preservePhys: overlapping an existing preservation is EEXIST', () => {
  const k = mk();
  const a = k.alloc(4 * PAGE_SIZE);
  k.preservePhys(a, 2 * PAGE_SIZE);
  assert.equal(code(() => k.preservePhys(a + PAGE_SIZE, 2 * PAGE_SIZE)), 'EEXIST');
});

test('unpreserve must match the granularity of the preserve, else EINVAL', () => {
  const k = mk();
  const a = k.alloc(4 * PAGE_SIZE);
  k.preservePhys(a, 4 * PAGE_SIZE);
  assert.equal(code(() => k.unpreservePhys(a, 2 * PAGE_SIZE)), 'EINVAL');
  assert.equal(code(() => k.unpreservePhys(a + PAGE_SIZE, PAGE_SIZE)), 'EINVAL');
  assert.equal(code(() => k.unpreserveFolio(a, 2)), 'EINVAL', 'a phys range is not a folio');
  assert.equal(code(() => k.unpreservePhys(a + 8 * PAGE_SIZE, PAGE_SIZE)), 'EINVAL', 'never preserved');
  k.unpreservePhys(a, 4 * PAGE_SIZE);
  assert.equal(k.isPreserved(a), false);
});

test('folios: 2^order pages, aligned to their size', () => {
  const k = mk();
  const f = k.allocFolio(4);
  assert.equal(f % (16 * PAGE_SIZE), 0);
  assert.equal(code(() => k.preserveFolio(f + PAGE_SIZE, 2)), 'EINVAL', 'misaligned folio');
  assert.equal(code(() => k.preserveFolio(f, -1)), 'EINVAL');
  k.preserveFolio(f, 4);
  assert.equal(code(() => k.unpreservePhys(f, 16 * PAGE_SIZE)), 'EINVAL', 'a folio is not a phys range');
  k.unpreserveFolio(f, 4);
});

test('preserve, unpreserve and subtree changes are EBUSY while finalized; abort lifts it', () => {
  const k = mk();
  const a = k.alloc(PAGE_SIZE);
  const b = k.alloc(PAGE_SIZE);
  k.preservePhys(a, PAGE_SIZE);
  const t = k.storeFdt(new FdtNode(''));
  k.finalize();
  assert.equal(code(() => k.preservePhys(b, PAGE_SIZE)), 'EBUSY');
  assert.equal(code(() => k.unpreservePhys(a, PAGE_SIZE)), 'EBUSY');
  assert.equal(code(() => k.addSubtree('x', t)), 'EBUSY');
  k.abort();
  k.preservePhys(b, PAGE_SIZE);
  k.unpreservePhys(a, PAGE_SIZE);
});

test('finalize twice is EEXIST; abort when not finalized is ENOENT', () => {
  const k = mk();
  assert.equal(code(() => k.abort()), 'ENOENT');
  k.finalize();
  assert.equal(code(() => k.finalize()), 'EEXIST');
  k.abort();
  assert.equal(code(() => k.abort()), 'ENOENT');
  k.finalize();
  assert.equal(k.finalized, true);
});

test('abort leaves client preservations alone (v3 "don\'t unpreserve memory during abort")', () => {
  const k = mk();
  const a = k.allocPreserve(PAGE_SIZE);
  k.finalize();
  k.abort();
  assert.equal(k.isPreserved(a), true);
  k.finalize();
  assert.match(k.handover(), /^kho-v1:\d+:0x[0-9a-f]+:\d+$/);
});

test('with KHO disabled, finalize and abort are EOPNOTSUPP', () => {
  const k = mk(false);
  assert.equal(code(() => k.finalize()), 'EOPNOTSUPP');
  assert.equal(code(() => k.abort()), 'EOPNOTSUPP');
});

test('subtrees: duplicate name EEXIST, unknown ENOENT, not an FDT EINVAL, outside preserved memory EINVAL at finalize', () => {
  const k = mk();
  const t = k.storeFdt(new FdtNode('').setString('compatible', 'x'));
  k.addSubtree('a', t);
  assert.equal(code(() => k.addSubtree('a', t)), 'EEXIST');
  assert.equal(code(() => k.removeSubtree('nope')), 'ENOENT');
  assert.equal(code(() => k.addSubtree('bad name', t)), 'EINVAL');
  assert.equal(code(() => k.addSubtree('garbage', k.alloc(PAGE_SIZE))), 'EINVAL', 'zero page is not an FDT');
  k.removeSubtree(t);
  const loose = k.alloc(PAGE_SIZE);
  const blob = new FdtNode('');
  k.view(loose, 64).set(new Uint8Array(0));
  const addr = k.storeFdt(blob);
  k.unpreservePhys(addr, PAGE_SIZE);
  k.addSubtree('loose', addr);
  assert.equal(code(() => k.finalize()), 'EINVAL');
  assert.equal(k.finalized, false);
});

test('retrieveSubtree on a cold boot is ENOENT; restore of memory never handed over is ENOENT', () => {
  const k = mk();
  assert.equal(code(() => k.retrieveSubtree('LUO')), 'ENOENT');
  assert.equal(code(() => k.restoreFolio(PAGE_SIZE)), 'ENOENT');
});

test('the allocator never hands out a preserved page, and free of preserved pages is EBUSY', () => {
  const k = mk();
  const a = k.alloc(PAGE_SIZE);
  k.preservePhys(a, PAGE_SIZE);
  assert.equal(code(() => k.free(a, PAGE_SIZE)), 'EBUSY');
  // Preserving pages that were never allocated takes them out of the free set too.
  const b = k.alloc(PAGE_SIZE);
  k.free(b, PAGE_SIZE);
  k.preservePhys(b, PAGE_SIZE);
  for (let i = 0; i < 64; i++) {
    const c = k.alloc(PAGE_SIZE);
    assert.notEqual(c, a);
    assert.notEqual(c, b);
  }
});

test('views outside the arena are EFAULT', () => {
  const k = mk();
  assert.equal(code(() => k.view(k.arena.size - 10, 20)), 'EFAULT');
  assert.equal(code(() => k.view(-1, 1)), 'EFAULT');
});
