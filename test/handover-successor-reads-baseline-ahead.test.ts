// Successor mode: the counters of a server's idle connections (its baseline, taken once the
// successor holds their fds) go into a base block that the successor reads before the freeze
// (ahead-v1); the table at the freeze carries only the connections that moved since. Here 300
// connections, 30 of them streaming through the update: the baseline's block is read ahead by
// the successor, every connection comes out of two updates with every byte exactly once, and
// the idle ones carry their counters (a later update still hands them over, and the next
// version could tell whether a failed one touched them).
import assert from 'node:assert/strict';
import test from 'node:test';
import { assertEveryByteOnce, connectClients, Service } from './echo-harness.js';
import { tmpDir } from './helpers.js';

test('the idle connections\' counters are read ahead from a base block; all carried exactly once, twice', { timeout: 120_000 }, async () => {
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', LUO_TRACE: '1' });
  try {
    const port = await svc.start();
    const clients = await connectClients(port, 300, { echo: 64 });
    const busy = clients.slice(0, 30);
    const pumper = setInterval(() => busy.forEach((c) => c.pump(128)), 5).unref();
    for (let u = 0; u < 2; u++) {
      const from = svc.stderr.length;
      const r = await svc.update();
      assert.equal(r.event, 'ready', `${JSON.stringify(r)}; stderr: ${svc.stderr.slice(-3000)}`);
      assert.equal(r.restored, 300);
      const trace = svc.stderr.slice(from);
      const base = /server: baseline of (\d+) idle connections \(a base block\)/.exec(trace);
      assert.ok(base, `the baseline went into a base block; trace: ${trace.slice(-2000)}`);
      assert.ok(Number(base[1]) >= 200 && Number(base[1]) <= 300, `most connections were idle at the baseline (${base[1]})`);
      assert.match(trace, /successor: read ahead 1 of 1 regions/, 'the successor read it before the freeze');
      for (const c of clients) c.pump(32);
      await Promise.all(clients.map((c) => c.settled()));
    }
    clearInterval(pumper);
    await assertEveryByteOnce(clients, 16);
  } finally {
    svc.stop();
  }
});
