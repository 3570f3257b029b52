// Successor mode when the successor fails before it has taken the handover: it crashes while
// loading (ECHILD), never gets to luo's boot (ETIMEDOUT, and it is killed), or dies once it
// holds the fds sent before the freeze (ECHILD: it had copies only). Each time the current
// image cancels back to NORMAL and keeps serving every connection, nothing lost, and the
// successor is gone.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Service, StreamClient } from './echo-harness.js';
import { imagePath, tmpDir } from './helpers.js';

const cases = [
  ['crashes while loading', { ECHO_NEXT: imagePath('dies-at-start') }, 'ECHILD'],
  ['never gets to boot', { ECHO_NEXT: imagePath('never-ready') }, 'ETIMEDOUT'],
  ['dies once it holds the fds sent early', { ECHO_DIE_AT_SETTLE: '1' }, 'ECHILD'],
] as const;

for (const [what, env, code] of cases) {
  test(`a successor that ${what}: ${code}, the old image cancels and keeps serving every byte`, { timeout: 60_000 }, async () => {
    const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', ECHO_SUCCESSOR_TIMEOUT_MS: '1500', ...env });
    let pumper: NodeJS.Timeout | undefined;
    try {
      const port = await svc.start();
      const clients = Array.from({ length: 20 }, (_, i) => new StreamClient(i, port));
      await Promise.all(clients.map((c) => c.connected()));
      pumper = setInterval(() => clients.forEach((c) => c.pump(512)), 5).unref();
      const pid = svc.pid;
      const r = await svc.update();
      assert.equal(r.event, 'update-failed');
      assert.equal(r.code, code, JSON.stringify(r));
      assert.equal(r.state, 'normal');
      assert.equal(svc.pid, pid);
      await new Promise((res) => setTimeout(res, 300));
      clearInterval(pumper);
      await Promise.all(clients.map((c) => c.settled()));
      for (const c of clients) {
        assert.equal(c.error, null);
        assert.equal(c.closed, false);
        assert.equal(c.received, c.sent);
        assert.ok(c.sent > 0);
      }
      for (const c of clients) c.sock.destroy();
    } finally {
      // A failed assertion must not leave the pump running: the file would never exit.
      clearInterval(pumper);
      svc.stop();
    }
  });
}
