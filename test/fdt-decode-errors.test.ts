// The decoder is strict: each kind of defect raises FdtError naming the offset.
import assert from 'node:assert/strict';
import test from 'node:test';
import { FdtError } from '../src/errors.js';
import { FdtNode, decode, encode } from '../src/fdt/index.js';

const good = (): Uint8Array => {
  const r = new FdtNode('');
  r.setString('compatible', 'x').addChild('a').setU32('v', 1);
  return encode(r);
};
const set32 = (b: Uint8Array, off: number, v: number): Uint8Array => {
  new DataView(b.buffer, b.byteOffset).setUint32(off, v);
  return b;
};
const structOff = (b: Uint8Array): number => new DataView(b.buffer, b.byteOffset).getUint32(8);

function rejects(blob: Uint8Array, message: RegExp, offset?: number): void {
  try {
    decode(blob);
  } catch (e) {
    assert.ok(e instanceof FdtError, `expected FdtError, got ${String(e)}`);
    assert.match(e.message, message);
    assert.match(e.message, /at offset \d+/);
    if (offset !== undefined) assert.equal(e.offset, offset);
    return;
  }
  assert.fail('decode accepted a broken blob');
}

test('too short for a header', () => rejects(new Uint8Array(10), /shorter than the 40-byte header/, 0));
test('bad magic', () => rejects(set32(good(), 0, 0xfeedd00d), /bad magic/, 0));
test('old version', () => rejects(set32(good(), 20, 16), /unsupported version 16/, 20));
test('incompatible last_comp_version', () => rejects(set32(good(), 24, 18), /last compatible version 18/, 24));
test('totalsize beyond the blob', () => rejects(set32(good(), 4, 1 << 20), /exceeds the blob/, 4));
test('structure block outside', () => rejects(set32(good(), 36, 1 << 16), /structure block .* outside/, 8));
test('strings block outside', () => rejects(set32(good(), 12, 1 << 16), /strings block .* outside/, 12));
test('misaligned structure block', () => rejects(set32(good(), 8, structOff(good()) + 2), /not 4-byte aligned/, 8));
test('misaligned reservation block', () => rejects(set32(good(), 16, 44), /not 8-byte aligned/, 16));
test('unknown token', () => {
  const b = good();
  rejects(set32(b, structOff(b), 7), /unknown token 0x7/, structOff(b));
});
test('END_NODE without BEGIN_NODE', () => {
  const b = good();
  rejects(set32(b, structOff(b), 2), /FDT_END_NODE without/, structOff(b));
});
test('FDT_END inside an open node', () => {
  const b = good();
  rejects(set32(b, structOff(b) + 8, 9), /FDT_END inside an open node/);
});
test('property outside any node', () => {
  const b = good();
  rejects(set32(b, structOff(b), 3), /property outside any node/);
});
test('property length past the block', () => {
  const b = good();
  // root BEGIN_NODE (4) + empty name padded (4) → first PROP at +8; its len at +12
  rejects(set32(b, structOff(b) + 12, 0xfffffff0), /property length \d+ runs past/);
});
test('name offset outside the strings block', () => {
  const b = good();
  rejects(set32(b, structOff(b) + 16, 0x7fff), /name offset 32767 outside the strings block/);
});
test('unterminated node name', () => {
  const r = new FdtNode('');
  r.addChild('abc');
  const b = encode(r);
  const dv = new DataView(b.buffer);
  // Replace the whole struct block after the child's BEGIN_NODE with non-NUL bytes.
  const so = dv.getUint32(8);
  const size = dv.getUint32(36);
  b.fill(0x41, so + 12, so + size);
  rejects(b, /node name is not NUL-terminated/);
});
test('no FDT_END', () => {
  const b = good();
  const dv = new DataView(b.buffer);
  set32(b, 36, dv.getUint32(36) - 4);
  rejects(b, /ends without FDT_END/);
});
test('nesting deeper than the limit', () => {
  let n = new FdtNode('');
  const root = n;
  for (let i = 0; i < 70; i++) n = n.addChild('n');
  rejects(encode(root), /nesting deeper than 64/);
});
test('root with a name', () => {
  const b = good();
  const so = structOff(b);
  b[so + 4] = 0x41;
  rejects(b, /root node has name "A"/, so);
});
test('duplicate property and duplicate node', () => {
  const r = new FdtNode('');
  r.setU32('aa', 1).setU32('bb', 2);
  r.addChild('x');
  r.addChild('y');
  const b = encode(r);
  const text = Buffer.from(b);
  // make "bb" read as "aa" by pointing its nameoff at "aa"'s
  const so = structOff(b);
  const firstNameoff = new DataView(b.buffer).getUint32(so + 8 + 8);
  set32(b, so + 8 + 16 + 8, firstNameoff);
  rejects(b, /duplicate property "aa"/);
  const c = encode(r);
  const yAt = Buffer.from(c).indexOf('y\0', structOff(c));
  c[yAt] = 'x'.charCodeAt(0);
  rejects(c, /duplicate node "x"/);
  assert.ok(text.length > 0);
});
test('property after a subnode', () => {
  const r = new FdtNode('');
  r.addChild('c');
  const b = encode(r);
  const so = structOff(b);
  // root: BEGIN(4) name(4) | child BEGIN(4) "c\0"(4) END(4) | END_NODE(4) END(4)
  // Turn child END_NODE + root END_NODE into a NOP and keep structure: insert a PROP is hard,
  // so build by hand instead.
  const hand = new Uint8Array(b.length + 16);
  hand.set(b.subarray(0, so + 20));
  const dv = new DataView(hand.buffer);
  dv.setUint32(so + 20, 3); // PROP
  dv.setUint32(so + 24, 0); // len 0
  dv.setUint32(so + 28, 0); // nameoff 0
  dv.setUint32(so + 32, 2); // END_NODE (root)
  dv.setUint32(so + 36, 9); // END
  const strOff = so + 40;
  hand.set(new TextEncoder().encode('p\0'), strOff);
  dv.setUint32(4, hand.length);
  dv.setUint32(12, strOff);
  dv.setUint32(32, 2);
  dv.setUint32(36, 40);
  rejects(hand, /property "p" after a subnode/);
});
test('second top-level node', () => {
  const b = good();
  const so = structOff(b);
  const size = new DataView(b.buffer).getUint32(36);
  // Replace FDT_END with BEGIN_NODE: a second root.
  set32(b, so + size - 4, 1);
  rejects(b, /second top-level node|not NUL-terminated|ends without/);
});
test('non-byte-array input', () => {
  assert.throws(() => decode('not bytes' as unknown as Uint8Array), FdtError);
});
