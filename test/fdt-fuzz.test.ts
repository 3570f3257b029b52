// Property tests of the decoder (fast-check): valid trees round-trip; random and mutated blobs
// either decode or raise FdtError, never anything else, never hang, and the tree stays within
// the input's size.
import assert from 'node:assert/strict';
import test from 'node:test';
import fc from 'fast-check';
import { FdtError } from '../src/errors.js';
import { Fdt, FdtNode, decode, encode, nodesEqual } from '../src/fdt/index.js';

const name = fc.stringMatching(/^[a-z][a-z0-9,._+-]{0,12}(@[0-9a-f]{1,4})?$/);
const propName = fc.stringMatching(/^[a-z#][a-z0-9,._+?#-]{0,12}$/);
const value = fc.uint8Array({ maxLength: 40 });

const nodeArb: fc.Memo<FdtNode> = fc.memo((depth) =>
  fc.record({
    props: fc.uniqueArray(fc.tuple(propName, value), { maxLength: 5, selector: (p) => p[0] }),
    kids: depth > 1 ? fc.uniqueArray(fc.tuple(name, nodeArb(depth - 1)), { maxLength: 3, selector: (k) => k[0] }) : fc.constant([] as Array<[string, FdtNode]>),
  }).map(({ props, kids }) => {
    const n = new FdtNode('');
    for (const [k, v] of props) n.setBytes(k, v);
    for (const [k, c] of kids) {
      const copy = n.addChild(k);
      for (const [pk, pv] of c.props) copy.setBytes(pk, pv);
      for (const [ck, cc] of c.children) copy.children.set(ck, cc);
    }
    return n;
  }),
);

/** Size of everything a decoded tree holds (to check memory is bounded by the input). */
function footprint(n: FdtNode): number {
  let s = 16 + n.name.length;
  for (const [k, v] of n.props) s += k.length + v.length + 12;
  for (const c of n.children.values()) s += footprint(c);
  return s;
}

function decodeOrFdtError(blob: Uint8Array): void {
  try {
    const t = decode(blob);
    assert.ok(footprint(t.root) <= blob.length * 4 + 64, 'decoded tree is bounded by the input');
  } catch (e) {
    if (!(e instanceof FdtError)) throw e;
  }
}

test('any valid tree round-trips', () => {
  fc.assert(
    fc.property(nodeArb(4), fc.array(fc.record({ address: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), size: fc.bigInt({ min: 1n, max: 2n ** 64n - 1n }) }), { maxLength: 3 }), (root, rsv) => {
      const t = new Fdt(root, rsv);
      const back = decode(encode(t));
      return nodesEqual(back.root, root) && back.memReserve.length === rsv.length;
    }),
    { numRuns: 300 },
  );
});

test('random bytes raise only FdtError', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), (b) => decodeOrFdtError(b)), { numRuns: 2000 });
});

test('random bytes behind a valid header raise only FdtError', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 400 }), fc.nat(400), fc.nat(400), fc.nat(400), fc.nat(400), (body, so, ss, sto, sts) => {
      const b = new Uint8Array(40 + body.length);
      b.set(body, 40);
      const dv = new DataView(b.buffer);
      dv.setUint32(0, 0xd00dfeed);
      dv.setUint32(4, b.length);
      dv.setUint32(8, 40 + (so & ~3));
      dv.setUint32(12, 40 + sto);
      dv.setUint32(16, 40);
      dv.setUint32(20, 17);
      dv.setUint32(24, 16);
      dv.setUint32(32, sts);
      dv.setUint32(36, ss & ~3);
      decodeOrFdtError(b);
    }),
    { numRuns: 2000 },
  );
});

test('mutated valid blobs raise only FdtError', () => {
  fc.assert(
    fc.property(nodeArb(3), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), fc.option(fc.nat()), (root, muts, cut) => {
      let b = encode(root);
      for (const [at, v] of muts) b[at % b.length] = v;
      if (cut !== null) b = b.subarray(0, cut % (b.length + 1));
      decodeOrFdtError(b);
    }),
    { numRuns: 3000 },
  );
});
