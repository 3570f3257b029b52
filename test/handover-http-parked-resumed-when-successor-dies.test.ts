// An HTTP server's idle connections are parked once the baseline has them (they read nothing
// until the successor's wake set shows input). If the successor dies after that, when asked
// to read memory ahead (right before the freeze), the update is cancelled (ECHILD) and every
// parked connection reads again: the old version, still serving, answers a request on each
// of 500 keep-alive connections, exactly once, and nothing was closed.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Service } from './echo-harness.js';
import { tmpDir } from './helpers.js';
import { connectKeepAlive, type KeepAlive } from './keepalive-client.js';

test('a successor that dies after the old image parked its idle HTTP connections: ECHILD, every one reads again and is answered once by the old version', { timeout: 60_000 }, async () => {
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_HTTP: '1', ECHO_SUCCESSOR: '1', ECHO_DIE_AT_AHEAD: '1', LUO_TRACE: '1' });
  const conns: KeepAlive[] = [];
  try {
    const port = await svc.start();
    conns.push(...await connectKeepAlive(port, 500));
    (await Promise.all(conns.map((c, i) => c.get(`/c${i}/0`)))).forEach((a, i) => assert.equal(a, `a:/c${i}/0`));
    const pid = svc.pid;
    const from = svc.stderr.length;
    const r = await svc.update();
    assert.equal(r.event, 'update-failed', JSON.stringify(r));
    assert.equal(r.code, 'ECHILD', JSON.stringify(r));
    assert.equal(r.state, 'normal');
    assert.equal(svc.pid, pid);
    const parked = /luo-trace \d+ \S+ server: baseline of \d+ idle connections.* \((\d+) parked\)/.exec(svc.stderr.slice(from));
    assert.ok(parked && Number(parked[1]) >= 450, `the old image parked its idle connections before the successor died: ${svc.stderr.slice(from, from + 3000)}`);
    (await Promise.all(conns.map((c, i) => c.get(`/c${i}/1`)))).forEach((a, i) => assert.equal(a, `a:/c${i}/1`));
    conns.forEach((c, i) => {
      assert.equal(c.bodies.length, 2, `connection ${i}: ${JSON.stringify(c.bodies)}`);
      assert.equal(c.sock.destroyed, false, `connection ${i} was closed`);
    });
  } finally {
    for (const c of conns) c.sock.destroy();
    svc.stop();
  }
});
