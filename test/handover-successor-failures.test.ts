// Successor mode when the successor fails before it has taken the handover: it crashes while
// loading (ECHILD), never gets to luo's boot (ETIMEDOUT, and it is killed), or dies once it
// holds the fds sent before the freeze, or once the current image took its baseline of idle
// connections and asks it to read their base block ahead (ECHILD: it had copies only; the
// baseline's connections are watched, then released). Each time the current
// image cancels back to NORMAL and keeps serving every connection, nothing lost, and the
// successor is gone.
import assert from 'node:assert/strict';
import test from 'node:test';
import { assertEveryByteOnce, connectClients, Service } from './echo-harness.js';
import { imagePath, tmpDir } from './helpers.js';

// [what it does, its env, the error, idle connections beside the 20 streaming ones (a baseline
// with idle connections in it is what the successor is asked to read ahead)]
const cases = [
  ['crashes while loading', { ECHO_NEXT: imagePath('dies-at-start') }, 'ECHILD', 0],
  ['never gets to boot', { ECHO_NEXT: imagePath('never-ready') }, 'ETIMEDOUT', 0],
  ['dies once it holds the fds sent early', { ECHO_DIE_AT_SETTLE: '1' }, 'ECHILD', 0],
  ['dies when asked to read ahead, after the old image took its baseline', { ECHO_DIE_AT_AHEAD: '1' }, 'ECHILD', 300],
] as const;

for (const [what, env, code, idleCount] of cases) {
  test(`a successor that ${what}: ${code}, the old image cancels and keeps serving every byte`, { timeout: 60_000 }, async () => {
    // A short timeout only where the timeout is what is checked: the successors that die are
    // given time to get there on a loaded machine (ETIMEDOUT there is not what they test).
    const timeoutMs = code === 'ETIMEDOUT' ? '1500' : '15000';
    const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', ECHO_SUCCESSOR_TIMEOUT_MS: timeoutMs, ...env });
    let pumper: NodeJS.Timeout | undefined;
    try {
      const port = await svc.start();
      const idle = await connectClients(port, idleCount, { firstId: 100, echo: 8 });
      const clients = await connectClients(port, 20);
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
      await assertEveryByteOnce(idle, 8);
      for (const c of [...clients, ...idle]) c.sock.destroy();
    } finally {
      // A failed assertion must not leave the pump running: the file would never exit.
      clearInterval(pumper);
      svc.stop();
    }
  });
}
