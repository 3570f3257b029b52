// restoreServer serves first: connections with bytes waiting (carried, or readable in the
// kernel) are adopted before idle ones, and served before any idle one is adopted. 400 idle
// connections are opened first, then 5 that stream; after an update the 5 are the first
// adopted, the first byte the new image reads comes when exactly those 5 are adopted, and
// every byte still comes back exactly once. In place (readiness from poll) and through a
// successor (readiness from the epoll set it registered before the freeze).
import assert from 'node:assert/strict';
import test from 'node:test';
import { connectClients, Service } from './echo-harness.js';
import { tmpDir } from './helpers.js';

for (const mode of ['exec', 'successor'] as const) {
  test(`busy connections are adopted and served before idle ones (${mode})`, { timeout: 60_000 }, async () => {
    const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: mode === 'successor' ? '1' : '0' });
    try {
      const port = await svc.start();
      const idle = await connectClients(port, 400, { echo: 16 });
      const busy = await connectClients(port, 5, { firstId: 1000 });
      const pumper = setInterval(() => busy.forEach((c) => c.pump(64)), 1).unref();
      await new Promise((r) => setTimeout(r, 200));
      const r = await svc.update();
      assert.equal(r.event, 'ready', JSON.stringify(r));
      await new Promise((res) => setTimeout(res, 200));
      clearInterval(pumper);
      await Promise.all([...idle, ...busy].map((c) => c.settled()));
      const first = (r.firstPorts as number[]).slice(0, 5).sort();
      assert.deepEqual(first, busy.map((c) => c.sock.localPort).sort(), 'the streaming connections come first');
      // Busy ones are adopted in batches that double (1, 2, 4, …), each served before the next:
      // the first byte is read as soon as the first busy connection is adopted.
      assert.equal(r.adoptedAtFirstData, 1, 'the first busy connection was served before any other was adopted');
      for (const c of [...idle, ...busy]) {
        assert.equal(c.error, null);
        assert.equal(c.received, c.sent);
      }
      for (const c of [...idle, ...busy]) c.sock.destroy();
    } finally {
      svc.stop();
    }
  });
}
