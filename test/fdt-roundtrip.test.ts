// The FDT codec round-trips trees, and its typed accessors read what the spec says.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Fdt, FdtNode, decode, encode, nodesEqual } from '../src/fdt/index.js';

function sample(): Fdt {
  const root = new FdtNode('');
  root.setString('compatible', 'luo-v1').setU64('liveupdate-number', 3n).setU32('cell', 0x12345678);
  root.setStringList('list', ['a', 'bc', '']).setEmpty('flag').setBytes('raw', new Uint8Array([1, 2, 3]));
  const s = root.addChild('subsystems');
  s.setString('compatible', 'subsystems-v1').setU64('cache', 0xffffffffffffffffn);
  s.addChild('deep@0').addChild('deeper').setCells('cells', [1, 2, 3]);
  return new Fdt(root, [{ address: 0x1000n, size: 0x2000n }], 7);
}

test('encode → decode gives back the same tree, reservations and boot cpu', () => {
  const t = sample();
  const back = decode(encode(t));
  assert.ok(nodesEqual(back.root, t.root));
  assert.deepEqual(back.memReserve, t.memReserve);
  assert.equal(back.bootCpuidPhys, 7);
});

test('typed accessors are big-endian and check sizes', () => {
  const t = decode(encode(sample()));
  assert.equal(t.root.u32('cell'), 0x12345678);
  assert.equal(t.root.u64('liveupdate-number'), 3n);
  assert.deepEqual([...t.root.bytes('cell')!], [0x12, 0x34, 0x56, 0x78]);
  assert.equal(t.root.string('compatible'), 'luo-v1');
  assert.deepEqual(t.root.stringList('list'), ['a', 'bc', '']);
  assert.equal(t.root.bytes('flag')!.length, 0);
  assert.equal(t.lookup('/subsystems')!.u64('cache'), 0xffffffffffffffffn);
  assert.deepEqual(t.lookup('/subsystems/deep@0/deeper')!.cells('cells'), [1, 2, 3]);
  assert.equal(t.lookup('/nope'), undefined);
  assert.equal(t.root.u32('missing'), undefined);
  assert.throws(() => t.root.u32('liveupdate-number'), { code: 'ERR_FDT' });
  assert.throws(() => t.root.u64('cell'), { code: 'ERR_FDT' });
  assert.throws(() => t.root.string('raw'), { code: 'ERR_FDT' });
  assert.throws(() => t.root.string('list'), { code: 'ERR_FDT' });
  assert.throws(() => t.root.requireU64('missing'), /has no property "missing"/);
});

test('property names are stored once in the strings block', () => {
  const root = new FdtNode('');
  for (let i = 0; i < 10; i++) root.addChild(`n${i}`).setU32('compatible', i);
  const blob = encode(root);
  const dv = new DataView(blob.buffer);
  assert.equal(dv.getUint32(32), 'compatible\0'.length, 'size_dt_strings');
});

test('the header is version 17, last compatible 16, blocks aligned as dtc lays them out', () => {
  const blob = encode(sample());
  const dv = new DataView(blob.buffer);
  assert.equal(dv.getUint32(0), 0xd00dfeed);
  assert.equal(dv.getUint32(4), blob.length);
  assert.equal(dv.getUint32(16), 0x28, 'mem_rsvmap right after the header');
  assert.equal(dv.getUint32(20), 17);
  assert.equal(dv.getUint32(24), 16);
  assert.equal(dv.getUint32(8) % 4, 0);
});

test('decode copies: the tree does not alias the input', () => {
  const blob = encode(sample());
  const t = decode(blob);
  blob.fill(0);
  assert.equal(t.root.string('compatible'), 'luo-v1');
});
