// After a successor handover the previous image has closed every fd it handed over and waits,
// holding only its memory, until the successor's FINISH (the successor closes the link then):
// tearing down that memory would otherwise take CPU from the successor's first moments of
// serving. It exits right after FINISH, and serves nothing meanwhile.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Service, StreamClient } from './echo-harness.js';
import { alive, tmpDir } from './helpers.js';

test('the previous image exits at the successor\'s FINISH, not before', { timeout: 60_000 }, async () => {
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', ECHO_FINISH_DELAY_MS: '1500' });
  try {
    const port = await svc.start();
    const clients = Array.from({ length: 10 }, (_, i) => new StreamClient(i, port));
    await Promise.all(clients.map((c) => c.connected()));
    const old = svc.pid;
    const before = svc.lines.length;
    process.kill(old, 'SIGUSR2');
    const restored = await svc.next((l) => svc.lines.indexOf(l) >= before && l.event === 'restored');
    // The successor serves; the previous image waits for its FINISH.
    for (const c of clients) c.pump(256);
    await Promise.all(clients.map((c) => c.settled()));
    await new Promise((r) => setTimeout(r, 800));
    assert.equal(alive(old), true, 'the previous image is still there before FINISH');
    const ready = await svc.next((l) => svc.lines.indexOf(l) >= before && l.event === 'ready');
    assert.equal(ready.pid, restored.pid);
    for (let i = 0; i < 250 && alive(old); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(alive(old), false, 'and gone after it');
    for (const c of clients) {
      assert.equal(c.error, null);
      assert.equal(c.received, c.sent);
    }
    for (const c of clients) c.sock.destroy();
  } finally {
    svc.stop();
  }
});
