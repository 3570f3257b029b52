// 10 000 connections, and between the successor's early send and the freeze (a subsystem's
// freeze holds the window open while the old image serves) a thousand of them close, a
// thousand new ones open, and a thousand idle ones turn busy and stay busy through the
// handover. The pause then handles only what moved (the idle ones were taken at the early
// send and watched since): every moved, new and untouched connection must still come out
// exactly once, the closed ones must not be adopted, and no fd may leak.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Service, StreamClient, socketCount as sockets } from './echo-harness.js';
import { tmpDir } from './helpers.js';

const N = 10_000;
const CHURN = 1_000;

/** Until every client has had its echo (one poll over all of them, not a timer each). */
async function allSettled(cs: StreamClient[], timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const left = cs.filter((c) => c.received < c.sent && !c.error && !c.closed);
    if (left.length === 0) return;
    if (Date.now() > end) throw new Error(`${left.length} connections still wait for their echo (first: ${left[0]!.id}, ${left[0]!.received}/${left[0]!.sent})`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function connectAll(port: number, from: number, n: number): Promise<StreamClient[]> {
  const out: StreamClient[] = [];
  // In batches the listener's backlog takes.
  for (let i = 0; i < n; i += 250) {
    const batch = Array.from({ length: Math.min(250, n - i) }, (_, k) => new StreamClient(from + i + k, port));
    await Promise.all(batch.map((c) => c.connected()));
    out.push(...batch);
  }
  return out;
}

test('10 000 connections; 1 000 close, 1 000 open and 1 000 turn busy between the early send and the freeze: each exactly once, none leaked', { timeout: 240_000 }, async () => {
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', ECHO_FREEZE_HOLD: '1' });
  try {
    const port = await svc.start();
    const clients = await connectAll(port, 0, N);
    // Every connection echoes once: all accepted, all idle afterwards.
    for (const c of clients) c.pump(16);
    await allSettled(clients);
    const before = svc.lines.length;
    const ready = svc.update();
    const freezing = await svc.next((l) => svc.lines.indexOf(l) >= before && l.event === 'freezing', 60_000);
    // The window: the successor holds every fd; the old image still serves.
    const gone = clients.splice(0, CHURN);
    for (const c of gone) c.sock.destroy();
    const busy = clients.slice(0, CHURN);
    for (const c of busy) c.pump(300);
    const fresh = await connectAll(port, 100_000, CHURN);
    for (const c of fresh) c.pump(64);
    await allSettled([...busy, ...fresh]); // answered by the old image
    clients.push(...fresh);
    // The busy ones keep sending through the freeze and the handover.
    const pumper = setInterval(() => busy.forEach((c) => c.pump(97)), 3).unref();
    process.kill(freezing.pid as number, 'SIGUSR1');
    const r = await ready;
    assert.equal(r.event, 'ready', `${JSON.stringify(r)}; stderr: ${svc.stderr.slice(-3000)}`);
    clearInterval(pumper);
    assert.equal(r.restored, N, `the ${N - 2 * CHURN} untouched, the ${CHURN} busy and the ${CHURN} opened late; not the ${CHURN} closed`);
    for (const c of clients) c.pump(32); // every one, answered by the new image
    await allSettled(clients);
    for (const c of clients) {
      assert.equal(c.error, null);
      assert.equal(c.closed, false, `connection ${c.id} was closed`);
      assert.equal(c.received, c.sent, `connection ${c.id}`);
    }
    // Every socket the successor holds is a live connection or its listener: nothing of the
    // closed ones (their early copies, their prebuilt sockets) stayed open.
    assert.equal(sockets(r.pid as number), N + 1);
    for (const c of clients) c.sock.destroy();
  } finally {
    svc.stop();
  }
});
