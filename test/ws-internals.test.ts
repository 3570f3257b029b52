// The contract with `ws`'s internals (src/handlers/ws-internals.ts): fails loudly on a ws
// version where what luo reads moved. And the property that makes a half-received frame
// cross an update: for any stream of client frames cut anywhere, what a parser delivered
// before the cut, then what a fresh parser delivers from pendingInput() and the rest, is every
// message of the stream exactly once, in order (fuzzed).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import test from 'node:test';
import fc from 'fast-check';
import * as wsModule from 'ws';
import { WebSocket, WebSocketServer } from 'ws';
import { carryable, pendingInput, settled, shapeProblem, webSocketOf, type WsReceiver, type WsWebSocket } from '../src/handlers/ws-internals.js';

async function pair(opts: ConstructorParameters<typeof WebSocketServer>[0] = {}): Promise<{ server: http.Server; ws: WsWebSocket; raw: net.Socket; client: WebSocket }> {
  const server = http.createServer();
  const wss = new WebSocketServer({ server, ...opts });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const got = new Promise<net.Socket>((r) => wss.once('connection', (_ws, req) => r(req.socket)));
  const client = new WebSocket(`ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/x`, { perMessageDeflate: opts.perMessageDeflate !== undefined && opts.perMessageDeflate !== false });
  await new Promise((r) => client.once('open', r));
  const raw = await got;
  return { server, ws: webSocketOf(raw)!, raw, client };
}

test('ws: a server connection\'s WebSocket is found through its socket, with the fields luo reads', async () => {
  const { server, ws, client } = await pair();
  assert.ok(ws, 'socket[Symbol(websocket)] holds the WebSocket');
  assert.equal(shapeProblem(ws), null);
  assert.equal(carryable(ws), null);
  assert.equal(settled(ws), true);
  assert.equal(pendingInput(ws).length, 0, 'between frames with nothing buffered: nothing to carry');
  client.terminate();
  server.close();
});

test('ws: permessage-deflate with context takeover is refused with what to do', async () => {
  const { server, ws, client } = await pair({ perMessageDeflate: true });
  assert.match(carryable(ws) ?? '', /context takeover.*serverNoContextTakeover: true, clientNoContextTakeover: true/);
  client.terminate();
  server.close();
  const b = await pair({ perMessageDeflate: { serverNoContextTakeover: true, clientNoContextTakeover: true } });
  assert.equal(carryable(b.ws), null, 'without context takeover it crosses');
  b.client.terminate();
  b.server.close();
});

// --- the frame property -------------------------------------------------------------------

interface Frame { fin: boolean; opcode: number; payload: Buffer }

function encode(f: Frame): Buffer {
  const mask = crypto.randomBytes(4);
  const n = f.payload.length;
  const ext = n > 0xffff ? 8 : n > 125 ? 2 : 0;
  const head = Buffer.alloc(2 + ext);
  head[0] = (f.fin ? 0x80 : 0) | f.opcode;
  head[1] = 0x80 | (ext === 8 ? 127 : ext === 2 ? 126 : n);
  if (ext === 2) head.writeUInt16BE(n, 2);
  if (ext === 8) head.writeBigUInt64BE(BigInt(n), 2);
  return Buffer.concat([head, mask, Buffer.from(f.payload.map((b, i) => b ^ mask[i % 4]!))]);
}

/** A message as frames: maybe fragmented, with pings between its fragments. */
const message = fc.record({
  binary: fc.boolean(),
  parts: fc.array(fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.uint8Array({ minLength: 120, maxLength: 300 })), { minLength: 1, maxLength: 4 }),
  pings: fc.array(fc.boolean(), { maxLength: 4 }),
}).map(({ binary, parts, pings }) => {
  const frames: Frame[] = [];
  parts.forEach((p, i) => {
    frames.push({ fin: i === parts.length - 1, opcode: i === 0 ? (binary ? 2 : 1) : 0, payload: binary ? Buffer.from(p) : Buffer.from([...p].map((b) => 0x61 + (b % 26))) });
    if (pings[i] && i < parts.length - 1) frames.push({ fin: true, opcode: 9, payload: Buffer.from(`p${i}`) });
  });
  return frames;
});

type Event = ['message', string, boolean] | ['ping', string];

/** ws's frame parser (exported by ws, untyped in @types/ws). */
type Parser = WsReceiver & import('node:stream').Writable;
const Receiver = (wsModule as unknown as { Receiver: new (o: object) => Parser }).Receiver;

function receiver(events: Event[]): Parser {
  const r = new Receiver({ isServer: true, allowSynchronousEvents: true });
  r.on('message', (d: Buffer, bin: boolean) => events.push(['message', Buffer.from(d).toString('hex'), bin]));
  r.on('ping', (d: Buffer) => events.push(['ping', Buffer.from(d).toString('hex')]));
  r.on('error', (e: Error) => events.push(['ping', `ERROR ${e.message}`]));
  return r;
}

test('ws: pendingInput carries a parser cut anywhere: every message once, in order (fuzzed)', () => {
  fc.assert(fc.property(fc.array(message, { minLength: 1, maxLength: 6 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 1, max: 64 }), (messages, at, chunk) => {
    const stream = Buffer.concat(messages.flat().map(encode));
    const whole: Event[] = [];
    receiver(whole).write(Buffer.from(stream)); // (a parser unmasks in place: each gets a copy)
    const cut = Math.floor(at * stream.length);
    const before: Event[] = [];
    const a = receiver(before);
    for (let i = 0; i < cut; i += chunk) a.write(Buffer.from(stream.subarray(i, Math.min(cut, i + chunk))));
    const ws = { _receiver: a, _sender: { _queue: [], _state: 0 }, _extensions: {}, _protocol: '', readyState: 1, _isServer: true } as unknown as WsWebSocket;
    assert.equal(settled(ws), true);
    const after: Event[] = [];
    const b = receiver(after);
    b.write(Buffer.concat([pendingInput(ws), stream.subarray(cut)]));
    assert.deepEqual([...before, ...after], whole);
  }), { numRuns: 400 });
});

test('ws: a 64 KiB+ frame cut in its extended length or its payload crosses too', () => {
  const big = { fin: true, opcode: 2, payload: crypto.randomBytes(70_000) };
  const stream = Buffer.concat([encode(big), encode({ fin: true, opcode: 1, payload: Buffer.from('next') })]);
  for (const cut of [1, 2, 5, 9, 13, 14, 40_000, stream.length - 5]) {
    const whole: Event[] = [];
    receiver(whole).write(Buffer.from(stream)); // (a parser unmasks in place: each gets a copy)
    const before: Event[] = [];
    const a = receiver(before);
    a.write(Buffer.from(stream.subarray(0, cut)));
    const ws = { _receiver: a, _sender: { _queue: [], _state: 0 }, _extensions: {}, _protocol: '', readyState: 1, _isServer: true } as unknown as WsWebSocket;
    const after: Event[] = [];
    receiver(after).write(Buffer.concat([pendingInput(ws), stream.subarray(cut)]));
    assert.deepEqual([...before, ...after], whole, `cut at ${cut}`);
  }
});
