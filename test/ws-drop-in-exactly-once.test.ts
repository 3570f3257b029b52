// An unmodified `ws` app under `node --import luo/register`, three updates alternating in place
// and successor, with ws's own client: every connection stays open (no close, no reconnect),
// every request is answered exactly once and in order, by the version serving at the time,
// with the URL the connection was opened with; a 200 KB message, a message fragmented across
// an update, and a frame half sent at the freeze all arrive whole, once; a close handshake
// started just before an update ends cleanly (1000); a ping sent as an update starts gets its
// pong once. The agent's report counts them true.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import test from 'node:test';
import WebSocket from 'ws';
import { DropIn } from './dropin-harness.js';

interface Client { ws: WebSocket; seq: number; replies: Array<{ seq: number; v: string; url: string }>; closed: number | null; inflight: number }

function open(port: number, path: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

/** A masked client text frame (what ws's client would send), for writing by halves. */
function frame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = crypto.randomBytes(4);
  const head = payload.length < 126 ? Buffer.from([0x81, 0x80 | payload.length]) : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([head, mask, body]);
}

test('ws connections cross three updates exactly once, in order, both directions', { timeout: 240_000 }, async () => {
  const svc = await DropIn.start('ws-app.mjs', ['v1']);
  try {
    const clients: Client[] = [];
    let stop = false;
    const pump = (c: Client): void => {
      while (!stop && c.inflight < 4 && c.closed === null) {
        c.inflight++;
        c.ws.send(JSON.stringify({ op: 'echo', seq: ++c.seq }));
      }
    };
    for (let i = 0; i < 12; i++) {
      const ws = await open(svc.port, `/chat/${i}?room=r${i % 3}`);
      const c: Client = { ws, seq: 0, replies: [], closed: null, inflight: 0 };
      ws.on('message', (d, bin) => {
        if (bin) return;
        const m = JSON.parse(String(d)) as { seq: number; v: string; url: string };
        if (m.seq <= 0) return;
        c.replies.push(m);
        c.inflight--;
        pump(c);
      });
      ws.on('close', (code) => (c.closed = code));
      clients.push(c);
      pump(c);
    }

    // Big binary messages, echoed.
    const big = await open(svc.port, '/big');
    const bigSent: string[] = [];
    const bigGot: string[] = [];
    big.on('message', (d, bin) => bin && bigGot.push(crypto.createHash('sha256').update(d as Buffer).digest('hex')));
    const sendBig = (): void => {
      const b = crypto.randomBytes(200 * 1024);
      bigSent.push(crypto.createHash('sha256').update(b).digest('hex'));
      big.send(b);
    };

    // Raw halves and fragments, on their own connections.
    const raw = await open(svc.port, '/raw');
    const rawGot: Array<{ seq: number; v: string; body: string }> = [];
    raw.on('message', (d) => rawGot.push(JSON.parse(String(d))));
    const frag = await open(svc.port, '/frag');
    const fragGot: Array<{ seq: number; v: string; body: string }> = [];
    frag.on('message', (d) => fragGot.push(JSON.parse(String(d))));
    // Pings: one sent as each update starts, one after it; each answered by a pong, once.
    let pings = 0;
    let pongs = 0;
    big.on('pong', () => pongs++);
    const ping = (): void => {
      pings++;
      big.ping();
    };

    const waitFor = async (ok: () => boolean, what: string): Promise<void> => {
      const until = Date.now() + 20_000;
      while (!ok()) {
        if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    const served = (v: string): Promise<void> => waitFor(() => clients.every((c) => c.replies.at(-1)?.v === v), `every client served by ${v}`);

    await served('v1');
    const versions = ['v2', 'v1', 'v2'];
    for (let u = 0; u < 3; u++) {
      const successor = u === 1;
      sendBig();
      // Half a frame in the server's parser, the first fragment of a message, at the freeze.
      const half = frame(JSON.stringify({ op: 'echo', seq: 100 + u, body: `half-${u}` }));
      // Cut mid-header, mid-mask, mid-payload: the parser is in each of its states.
      const cut = [1, 4, half.length - 2][u]!;
      (raw as unknown as { _socket: import('node:net').Socket })._socket.write(half.subarray(0, cut));
      frag.send(`{"op":"echo","seq":${200 + u},"body":"frag`, { fin: false });
      // A close handshake started right before the update.
      const closing = await open(svc.port, '/closing');
      const closed = new Promise<number>((r) => closing.once('close', r));
      closing.send(JSON.stringify({ op: 'close' }));

      const updating = svc.update({ args: [versions[u]!], successor });
      ping();
      const r = await updating;
      assert.equal(r.code, 0, `update ${u + 1} (${successor ? 'successor' : 'in place'}): ${r.stdout}\n${r.stderr}\n${svc.stderr}`);
      assert.equal(r.report.outcome?.outcome, 'committed');
      const carried = (r.report.outcome?.carried ?? []) as Array<{ label: string; counts: Record<string, number> }>;
      const srv = carried.find((e) => e.label.startsWith('http'));
      assert.ok(srv, `the report names the server: ${JSON.stringify(carried)}`);
      assert.equal(srv.counts.unclaimed, 0);
      assert.equal(srv.counts.refused, 0);
      assert.equal(srv.counts.taken, srv.counts.upgraded, 'every upgraded connection was taken back');
      assert.ok(srv.counts.upgraded >= 15, `the WebSocket connections were carried (${srv.counts.upgraded})`);

      assert.equal(await closed, 1000, 'the close handshake ended cleanly');
      (raw as unknown as { _socket: import('node:net').Socket })._socket.write(half.subarray(cut));
      frag.send('ment"}', { fin: true });
      await served(versions[u]!);
      ping();
      await waitFor(() => pongs === pings, 'a pong for every ping');
      await waitFor(() => rawGot.length === u + 1 && fragGot.length === u + 1 && bigGot.length === u + 1, 'the half frame, the fragments and the big message');
      assert.deepEqual(rawGot[u], { seq: 100 + u, v: versions[u], url: '/raw', body: `half-${u}` });
      assert.deepEqual(fragGot[u], { seq: 200 + u, v: versions[u], url: '/frag', body: 'fragment' });
    }
    stop = true;
    await waitFor(() => clients.every((c) => c.inflight === 0), 'the last replies');

    assert.deepEqual(bigGot, bigSent, 'every big message echoed once, intact, in order');
    assert.equal(pongs, 6, 'six pings across three updates, six pongs');
    for (const [i, c] of clients.entries()) {
      assert.equal(c.closed, null, `client ${i} was never closed`);
      assert.deepEqual(c.replies.map((x) => x.seq), Array.from({ length: c.seq }, (_, k) => k + 1), `client ${i}: every request answered once, in order`);
      assert.ok(c.replies.every((x) => x.url === `/chat/${i}?room=r${i % 3}`), `client ${i}: the original URL in every version`);
      assert.deepEqual(c.replies.map((x) => x.v).filter((v, k, a) => k === 0 || a[k - 1] !== v), ['v1', 'v2', 'v1', 'v2'], `client ${i}: served by each version in turn`);
    }
    for (const ws of [big, raw, frag, ...clients.map((c) => c.ws)]) ws.terminate();
  } finally {
    svc.stop();
  }
});
