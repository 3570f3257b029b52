// The contract with socket.io's and engine.io's internals (src/integrations/socketio-internals.ts):
// fails loudly on a version where what luo reads moved.
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import test from 'node:test';
import { Server } from 'socket.io';
import { io as connect } from 'socket.io-client';
import { awaitedAcks, classesOf, countOwedAcks, engineBusy, netSocketOf, owedAcks, shapeProblem, socketsOf, type IoServer } from '../src/integrations/socketio-internals.js';
import { webSocketOf } from '../src/handlers/ws-internals.js';

test('socket.io: sessions, sockets, classes and acknowledgements are where luo reads them', async () => {
  const server = http.createServer();
  const sio = new Server(server);
  const io = sio as unknown as IoServer;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  assert.equal(shapeProblem(io), null);
  const cls = classesOf(io);
  assert.notEqual(typeof cls, 'string', String(cls));
  if (typeof cls === 'string') return;
  countOwedAcks(cls);
  let owe: ((v: string) => void) | null = null;
  const connected = new Promise<import('socket.io').Socket>((r) => sio.on('connection', (s) => {
    s.on('ask', (_m: unknown, ack: (v: string) => void) => (owe = ack));
    r(s);
  }));
  const client = connect(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, { transports: ['websocket'] });
  const srv = await connected;
  if (!client.connected) await new Promise((r) => client.once('connect', () => r(null)));
  const [e] = Object.values(io.engine.clients);
  assert.ok(e, 'engine.clients holds the session');
  const raw = netSocketOf(e);
  assert.ok(raw && webSocketOf(raw), 'the session\'s transport socket is a ws WebSocket on a net.Socket');
  const { connected: socks, pending } = socketsOf(io, e);
  assert.equal(socks.length, 1);
  assert.equal(pending, 0);
  const s = socks[0]!;
  assert.equal(s.id, client.id);
  assert.ok(s.rooms.has(s.id));
  assert.equal(engineBusy(e), false);
  const answered = new Promise<string>((r) => client.emit('ask', 1, r));
  while (!owe) await new Promise((r) => setTimeout(r, 2));
  assert.equal(owedAcks(s), 1, 'an ack this side owes is counted');
  (owe as (v: string) => void)('ok');
  assert.equal(await answered, 'ok');
  assert.equal(owedAcks(s), 0);
  client.on('probe', (ack: (v: string) => void) => ack('back'));
  const back = new Promise((r) => srv.emit('probe', r));
  assert.equal(awaitedAcks(s), 1, 'an ack the client owes is in socket.acks');
  assert.equal(await back, 'back');
  assert.equal(awaitedAcks(s), 0);
  client.disconnect();
  sio.close();
});
