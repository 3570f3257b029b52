// A successor adopts the idle connections in slices while it serves; a connection that gets
// input in the middle of a slice is adopted within a few adoptions and the slice ends, so that
// it is served at once: it does not wait for the rest of the slice. Here 2 000 idle
// connections, all in one slice (no batch or time limit), each adoption made slow (a heavy
// connection handler, 300 µs): the last one opened sends once the new image has begun
// adopting, and is adopted long before its turn in table order, its bytes echoed exactly once.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { Service, StreamClient } from './echo-harness.js';
import { tmpDir } from './helpers.js';

test('an idle connection that gets input in the middle of an adoption slice ends that slice and is adopted at once', { timeout: 120_000 }, async () => {
  const N = 2000;
  const rankFile = path.join(tmpDir(), 'rank-port');
  const svc = new Service({
    LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', ECHO_ADOPT_BATCH: String(N), ECHO_ADOPT_SLICE_MS: '60000', ECHO_ADOPT_COST_US: '300', ECHO_RANK_FILE: rankFile, LUO_TRACE: '1',
  });
  try {
    const port = await svc.start();
    const clients: StreamClient[] = [];
    for (let i = 0; i < N; i += 250) {
      const batch = Array.from({ length: Math.min(250, N - i) }, (_, k) => new StreamClient(i + k, port));
      await Promise.all(batch.map((c) => c.connected()));
      clients.push(...batch);
    }
    for (const c of clients) c.pump(8);
    await Promise.all(clients.map((c) => c.settled()));
    const last = clients.at(-1)!;
    fs.writeFileSync(rankFile, String(last.sock.localPort));
    const from = svc.stderr.length;
    const pid = svc.pid;
    const ready = svc.update();
    // Once the new image has decided which connections were busy at the handover (none of
    // these: all idle) and begun its one slice, the last one opened sends.
    for (;;) {
      const t = svc.stderr.slice(from);
      if (/restoreServer: \d+ connections, \d+ busy first/.test(t)) break;
      if (svc.lines.some((l) => l.event === 'update-failed')) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    last.pump(64);
    const r = await ready;
    assert.equal(r.event, 'ready', `${JSON.stringify(r)}; stderr: ${svc.stderr.slice(-2000)}`);
    assert.notEqual(r.pid, pid);
    await last.settled();
    assert.equal(last.received, last.sent, 'its bytes, exactly once');
    assert.ok((r.rankOfPort as number) >= 0, `the connection was adopted: ${JSON.stringify(r)}`);
    assert.ok((r.rankOfPort as number) < N / 2, `adopted when it had input (${String(r.rankOfPort)} before it), not at its turn (${N - 1})`);
    for (const c of clients) c.pump(8);
    await Promise.all(clients.map((c) => c.settled()));
    for (const c of clients) assert.equal(c.received, c.sent);
  } finally {
    svc.stop();
  }
});
