// An unmodified socket.io app under `node --import luo/register`, three updates alternating in
// place and successor, with socket.io's own client on the websocket transport: no client
// disconnects or connects again; each keeps its socket id, its rooms, its handshake (auth) and
// its data; every emit is acknowledged exactly once, in order, by the version serving at the
// time; room broadcasts reach each member once; a second namespace on the same connection
// carries on too.
import assert from 'node:assert/strict';
import test from 'node:test';
import { io as connect, type Socket } from 'socket.io-client';
import { DropIn } from './dropin-harness.js';

interface Ack { seq: number; v: string; id: string; rooms: string[]; auth: { token: string }; first: string }
interface C { s: Socket; admin: Socket; seq: number; acks: Ack[]; connects: number; disconnects: number; shouted: number[]; inflight: number; welcome: number }

test('socket.io sessions cross three updates: same id, rooms and handshake, every ack once', { timeout: 240_000 }, async () => {
  const svc = await DropIn.start('socketio-app.mjs', ['v1']);
  const clients: C[] = [];
  let stop = false;
  try {
    const pump = (c: C): void => {
      while (!stop && c.inflight < 3) {
        c.inflight++;
        const seq = ++c.seq;
        c.s.emit('req', { seq }, (a: Ack) => {
          c.acks.push(a);
          c.inflight--;
          pump(c);
        });
      }
    };
    for (let i = 0; i < 8; i++) {
      const url = `http://127.0.0.1:${svc.port}`;
      const s = connect(url, { transports: ['websocket'], query: { room: String(i % 2) }, auth: { token: `t${i}` }, reconnection: true });
      const c: C = { s, admin: connect(`${url}/admin`, { transports: ['websocket'], forceNew: false }), seq: 0, acks: [], connects: 0, disconnects: 0, shouted: [], inflight: 0, welcome: 0 };
      s.on('connect', () => c.connects++);
      s.on('disconnect', () => c.disconnects++);
      s.on('welcome', () => c.welcome++);
      s.on('shouted', (m: { n: number }) => c.shouted.push(m.n));
      await new Promise<void>((r) => s.once('connect', () => r()));
      clients.push(c);
      pump(c);
    }
    const waitFor = async (ok: () => boolean, what: string): Promise<void> => {
      const until = Date.now() + 20_000;
      while (!ok()) {
        if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    await waitFor(() => clients.every((c) => c.acks.at(-1)?.v === 'v1'), 'v1 acks');
    const ids = clients.map((c) => c.s.id);
    const versions = ['v2', 'v1', 'v2'];
    let shouts = 0;
    for (let u = 0; u < 3; u++) {
      clients[0]!.s.emit('shout', { n: ++shouts });
      const r = await svc.update({ args: [versions[u]!], successor: u === 1 });
      assert.equal(r.code, 0, `update ${u + 1}: ${r.stdout}\n${r.stderr}\n${svc.stderr}`);
      const srv = (r.report.outcome?.carried ?? []).find((e: { label: string }) => e.label.startsWith('http'));
      assert.equal(srv?.counts.unclaimed, 0, JSON.stringify(r.report.outcome));
      assert.equal(srv?.counts.taken, srv?.counts.upgraded);
      clients[1]!.s.emit('shout', { n: ++shouts });
      await waitFor(() => clients.every((c) => c.acks.at(-1)?.v === versions[u]), `${versions[u]} acks`);
      const who = await new Promise<{ v: string }>((r) => clients[2]!.admin.emit('who', r));
      assert.equal(who.v, versions[u], 'the second namespace is served by the new version');
    }
    stop = true;
    await waitFor(() => clients.every((c) => c.inflight === 0), 'the last acks');
    await waitFor(() => clients.filter((_, i) => i % 2 === 0).every((c) => c.shouted.length === 3) && clients.filter((_, i) => i % 2 === 1).every((c) => c.shouted.length === 3), 'the shouts');
    for (const [i, c] of clients.entries()) {
      assert.equal(c.connects, 1, `client ${i} connected once`);
      assert.equal(c.disconnects, 0, `client ${i} never disconnected`);
      assert.equal(c.welcome, 1, `client ${i} was welcomed once (the carried socket is recovered)`);
      assert.equal(c.s.id, ids[i], `client ${i} kept its id`);
      assert.deepEqual(c.acks.map((a) => a.seq), Array.from({ length: c.seq }, (_, k) => k + 1), `client ${i}: every emit acknowledged once, in order`);
      for (const a of c.acks) {
        assert.equal(a.id, ids[i]);
        assert.deepEqual(a.auth, { token: `t${i}` });
        assert.ok(a.rooms.includes(`room-${i % 2}`), `client ${i}: still in its room (${a.rooms})`);
        assert.equal(a.first, 'v1', 'socket.data carried');
      }
      assert.deepEqual(c.acks.map((a) => a.v).filter((v, k, arr) => k === 0 || arr[k - 1] !== v), ['v1', 'v2', 'v1', 'v2']);
    }
    // Shouts 1..6 went alternately to... every client is in room 0 or 1 and the shouters are
    // clients 0 (room 0) and 1 (room 1): each room heard its own three, once each.
    for (const [i, c] of clients.entries()) assert.deepEqual(c.shouted, i % 2 === 0 ? [1, 3, 5] : [2, 4, 6], `client ${i}: each room broadcast once`);
  } finally {
    stop = true;
    for (const c of clients) {
      c.s.disconnect();
      c.admin.disconnect();
    }
    svc.stop();
  }
});
