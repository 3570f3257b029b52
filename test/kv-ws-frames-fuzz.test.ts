// The example's WebSocket frame parser, fuzzed: any sequence of frames, cut at any points,
// parses back to the same frames, with the unconsumed tail in pending(); malformed frames are
// refused with the RFC 6455 close code, never a crash or a wrong frame.
import assert from 'node:assert/strict';
import test from 'node:test';
import fc from 'fast-check';
import { FrameParser, MessageAssembler, OP, WsProtocolError, acceptKey, encodeFrame } from '../examples/kv/ws.js';

const frame = fc.record({
  opcode: fc.constantFrom(OP.TEXT, OP.BINARY, OP.PING, OP.PONG),
  payload: fc.oneof(fc.uint8Array({ maxLength: 130 }), fc.uint8Array({ minLength: 65530, maxLength: 65600 })),
  mask: fc.uint8Array({ minLength: 4, maxLength: 4 }),
}).filter((f) => f.opcode < 8 || f.payload.length <= 125);

test('frames cut at random points parse back exactly; the tail waits in pending()', () => {
  fc.assert(fc.property(fc.array(frame, { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), fc.boolean(), (frames, cuts, masked) => {
    const wire = Buffer.concat(frames.map((f) => encodeFrame(f.opcode, f.payload, masked ? Buffer.from(f.mask) : undefined)));
    const points = [...new Set(cuts.map((c) => (wire.length ? c % wire.length : 0)))].sort((a, b) => a - b);
    const p = new FrameParser(masked);
    const out = [];
    let at = 0;
    for (const c of [...points, wire.length]) {
      out.push(...p.push(wire.subarray(at, c)));
      at = c;
    }
    assert.equal(out.length, frames.length);
    out.forEach((f, i) => {
      assert.equal(f.opcode, frames[i]!.opcode);
      assert.equal(f.fin, true);
      assert.deepEqual(new Uint8Array(f.payload), frames[i]!.payload);
    });
    assert.equal(p.pending().length, 0);
  }), { numRuns: 300 });
});

test('an incomplete frame stays pending and a fresh parser fed pending() then the rest gets it whole', () => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.nat(), (payload, cut) => {
    const wire = encodeFrame(OP.BINARY, payload, Buffer.from([1, 2, 3, 4]));
    const at = cut % wire.length;
    const a = new FrameParser(true);
    assert.deepEqual(a.push(wire.subarray(0, at)), []);
    const b = new FrameParser(true); // the next image's parser
    b.push(a.pending());
    const [f] = b.push(wire.subarray(at));
    assert.deepEqual(new Uint8Array(f!.payload), payload);
  }), { numRuns: 300 });
});

test('random bytes either parse, wait for more, or raise WsProtocolError with 1002/1009', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), fc.boolean(), (bytes, masked) => {
    const p = new FrameParser(masked, 1000);
    try {
      for (const f of p.push(bytes)) assert.ok([0, 1, 2, 8, 9, 10].includes(f.opcode));
    } catch (e) {
      assert.ok(e instanceof WsProtocolError, String(e));
      assert.ok([1002, 1009].includes(e.closeCode));
    }
  }), { numRuns: 2000 });
});

test('protocol violations are named', () => {
  const err = (bytes: number[], masked = true): string => {
    try {
      new FrameParser(masked, 100).push(Buffer.from(bytes));
      return 'none';
    } catch (e) {
      return `${(e as WsProtocolError).closeCode} ${(e as Error).message}`;
    }
  };
  assert.equal(err([0x81, 0x00]), '1002 client frames must be masked');
  assert.equal(err([0xc1, 0x80, 0, 0, 0, 0]), '1002 reserved bits set (no extension was negotiated)');
  assert.equal(err([0x83, 0x80, 0, 0, 0, 0]), '1002 unknown opcode 3');
  assert.equal(err([0x09, 0x80, 0, 0, 0, 0]), '1002 control frames must be whole and at most 125 bytes');
  assert.equal(err([0x82, 0xfe, 0x01, 0x00]), '1009 frame of 256 bytes is over the 100-byte limit');
  assert.equal(err([0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0]), '1009 frame of 4294967296 bytes is over the 100-byte limit');
  const asm = new MessageAssembler();
  assert.throws(() => asm.add({ fin: true, opcode: OP.CONT, payload: Buffer.alloc(0) }), /continuation frame without a message/);
  assert.equal(asm.add({ fin: false, opcode: OP.TEXT, payload: Buffer.from('he') }), null);
  assert.deepEqual(asm.add({ fin: true, opcode: OP.CONT, payload: Buffer.from('llo') }), { opcode: OP.TEXT, data: Buffer.from('hello') });
  // RFC 6455 §1.3's example key.
  assert.equal(acceptKey('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
});
