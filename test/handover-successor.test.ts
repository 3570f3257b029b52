// Successor mode: the next image starts while the current one serves and takes the handover
// over SCM_RIGHTS. 300 connections stream through three updates alternating two images:
// every byte exactly once, every connection kept, a new pid each time (the old one gone),
// connections opened during the handover served, and no fd leak.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Service, StreamClient } from './echo-harness.js';
import { alive, tmpDir } from './helpers.js';

test('300 streaming connections through three successor handovers: exactly once, new pids, no leak', { timeout: 120_000 }, async () => {
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1' });
  try {
    const port = await svc.start();
    const clients = Array.from({ length: 300 }, (_, i) => new StreamClient(i, port));
    await Promise.all(clients.map((c) => c.connected()));
    const pumper = setInterval(() => clients.forEach((c) => c.pump(256)), 10).unref();
    const late: StreamClient[] = [];
    const arrivals = setInterval(() => {
      const c = new StreamClient(10_000 + late.length, port);
      late.push(c);
      c.connected().then(() => c.pump(1024), () => {});
    }, 20).unref();
    const pids = [svc.pid];
    const readies = [];
    for (let u = 0; u < 3; u++) {
      await new Promise((r) => setTimeout(r, 500));
      const r = await svc.update();
      assert.equal(r.event, 'ready', JSON.stringify(r));
      readies.push(r);
      pids.push(r.pid as number);
    }
    await new Promise((r) => setTimeout(r, 300));
    clearInterval(pumper);
    clearInterval(arrivals);
    await Promise.all(late.map((c) => c.connected()));
    await new Promise((r) => setImmediate(r));
    await Promise.all([...clients, ...late].map((c) => c.settled()));
    assert.deepEqual(readies.map((r) => r.version), ['b', 'a', 'b']);
    assert.deepEqual(readies.map((r) => r.number), [1, 2, 3]);
    assert.equal(new Set(pids).size, 4, `a new pid each time: ${pids}`);
    for (const old of pids.slice(0, -1)) {
      // It exits in SCHED_IDLE, on CPU time nothing else wants: allow a busy machine time.
      for (let i = 0; i < 500 && alive(old); i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(alive(old), false, `the previous image ${old} exited`);
    }
    for (const c of [...clients, ...late]) {
      assert.equal(c.error, null);
      assert.equal(c.closed, false, `connection ${c.id} was closed`);
      assert.equal(c.received, c.sent, `connection ${c.id}`);
    }
    assert.ok(late.length > 40 && late.every((c) => c.received === 1024), `${late.length} late connections, all served`);
    assert.ok(readies.at(-1)!.restored as number >= 300);
    const fds = readies.map((r) => r.otherFds as number);
    assert.equal(new Set(fds).size, 1, `fds other than connections stay constant: ${fds}`);
    for (const c of [...clients, ...late]) c.sock.destroy();
  } finally {
    svc.stop();
  }
});
