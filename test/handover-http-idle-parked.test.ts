// An HTTP server handed over to a successor parks its idle keep-alive connections once the
// baseline has them (right before the freeze): libuv stops reading them and a readiness set
// watches them instead, so that the freeze has nothing to stop for them. Checked here with
// 1 000 idle connections: while the update waits before the server's freeze (a subsystem's
// freeze holds it), a request on 100 of them is answered at once by the old version (a parked
// connection that gets input reads again); the old image's freeze then stops only those
// (LUO_TRACE: "N idle connections stopped in the pause"), not the 1 000; and afterwards every
// connection is answered by the new version, each request exactly once.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Service } from './echo-harness.js';
import { connectKeepAlive, type KeepAlive } from './keepalive-client.js';
import { tmpDir } from './helpers.js';

test('idle HTTP connections parked before the freeze: input read again by the old version, the pause stops only those, every request answered once', { timeout: 120_000 }, async () => {
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_HTTP: '1', ECHO_SUCCESSOR: '1', ECHO_FREEZE_HOLD: '1', LUO_TRACE: '1' });
  const conns: KeepAlive[] = [];
  try {
    const port = await svc.start();
    conns.push(...await connectKeepAlive(port, 1000));
    // Each one served once by the old version: keep-alive connections, idle now.
    (await Promise.all(conns.map((c, i) => c.get(`/c${i}/0`)))).forEach((a, i) => assert.equal(a, `a:/c${i}/0`));
    const before = svc.lines.length;
    const ready = svc.update();
    const freezing = await svc.next((l) => svc.lines.indexOf(l) >= before && l.event === 'freezing');
    const old = freezing.pid as number;
    // The baseline is taken: the idle ones are parked. Input on 100 of them is read by the
    // old version while the update waits.
    const woken = conns.filter((_, i) => i % 10 === 3);
    const answers = await Promise.all(woken.map((c) => c.get(`/w${conns.indexOf(c)}`)));
    answers.forEach((a, j) => assert.equal(a, `a:/w${conns.indexOf(woken[j]!)}`));
    process.kill(old, 'SIGUSR1');
    const r = await ready;
    assert.equal(r.event, 'ready', `${JSON.stringify(r)}; stderr: ${svc.stderr.slice(-3000)}`);
    assert.equal(r.restored, 1000);

    const mine = svc.stderr.split('\n').filter((l) => l.startsWith(`luo-trace ${old} `));
    const parked = mine.map((l) => /baseline of (\d+) idle connections.* \((\d+) parked\)/.exec(l)).find(Boolean);
    assert.ok(parked, `the old image's baseline parked its idle connections; its trace: ${mine.join('\n')}`);
    assert.ok(Number(parked[2]) >= 900, `parked ${parked[2]} of ${parked[1]} idle`);
    const stopped = mine.map((l) => /server: (\d+) idle connections stopped in the pause/.exec(l)).find(Boolean);
    assert.ok(stopped, `the old image's freeze says how many idle connections it stopped; its trace: ${mine.join('\n')}`);
    assert.ok(Number(stopped[1]) <= woken.length, `the freeze stopped ${stopped[1]} idle connections: only those woken (${woken.length}), not all ${parked[2]} parked`);

    // The new version answers on every connection, and no request was answered twice.
    const after = await Promise.all(conns.map((c, i) => c.get(`/c${i}/1`)));
    after.forEach((a, i) => assert.equal(a, `b:/c${i}/1`));
    await new Promise((res) => setTimeout(res, 100));
    conns.forEach((c, i) => assert.equal(c.bodies.length, i % 10 === 3 ? 3 : 2, `connection ${i}: ${JSON.stringify(c.bodies)}`));
  } finally {
    for (const c of conns) c.sock.destroy();
    svc.stop();
  }
});
