// Successor mode sends the connections' fds before the freeze, while the old image still
// serves; whatever changes until the freeze travels in the handover. Here connections close
// and new ones open in that window (a subsystem's freeze holds it open until the test has seen
// the new ones answered by the old image, the server serving): the closed ones are not adopted and their early copies are closed, the new ones
// are carried, every byte of the others comes back exactly once, and no fd leaks.
import assert from 'node:assert/strict';
import test from 'node:test';
import { assertEveryByteOnce, Service, socketCount as sockets, StreamClient } from './echo-harness.js';
import { tmpDir } from './helpers.js';

test('connections closed and opened after the successor got its fds early: dropped and carried, exactly once, no leak', { timeout: 120_000 }, async () => {
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', ECHO_FREEZE_HOLD: '1' });
  try {
    const port = await svc.start();
    const clients = Array.from({ length: 200 }, (_, i) => new StreamClient(i, port));
    await Promise.all(clients.map((c) => c.connected()));
    const pumper = setInterval(() => clients.forEach((c) => c.pump(128)), 5).unref();
    await new Promise((r) => setTimeout(r, 200));
    const before = svc.lines.length;
    const ready = svc.update();
    // The successor has its fds; the old image still serves until the server freezes.
    const freezing = await svc.next((l) => svc.lines.indexOf(l) >= before && l.event === 'freezing');
    const gone = clients.splice(0, 60);
    for (const c of gone) c.sock.destroy();
    const fresh = Array.from({ length: 40 }, (_, i) => new StreamClient(5000 + i, port));
    await Promise.all(fresh.map((c) => c.connected()));
    for (const c of fresh) c.pump(512);
    await Promise.all(fresh.map((c) => c.settled())); // answered by the old image
    clients.push(...fresh);
    process.kill(freezing.pid as number, 'SIGUSR1'); // the window closes: freeze and hand over
    const r = await ready;
    assert.equal(r.event, 'ready', `${JSON.stringify(r)}; stderr: ${svc.stderr.slice(-3000)}`);
    await new Promise((res) => setTimeout(res, 300));
    clearInterval(pumper);
    await assertEveryByteOnce(clients, 256); // and by the new one
    assert.equal(r.restored, 180, 'the 140 that stayed and the 40 opened late; not the 60 closed');
    // Every socket the successor holds is a live connection or its listener: the early copies
    // of the closed connections were closed.
    await new Promise((res) => setTimeout(res, 100));
    assert.equal(sockets(r.pid as number), 180 + 1);
    // And a second handover, with the same shape, keeps everything.
    const before2 = svc.lines.length;
    const ready2 = svc.update();
    const freezing2 = await svc.next((l) => svc.lines.indexOf(l) >= before2 && l.event === 'freezing');
    process.kill(freezing2.pid as number, 'SIGUSR1');
    const r2 = await ready2;
    assert.equal(r2.event, 'ready', `${JSON.stringify(r2)}; lines since: ${JSON.stringify(svc.lines.slice(before2))}; stderr: ${svc.stderr.slice(-3000)}`);
    assert.equal(r2.restored, 180);
    assert.equal(r2.otherFds, r.otherFds, 'fds other than connections stay constant');
    for (const c of clients) c.pump(64);
    await Promise.all(clients.map((c) => c.settled()));
    for (const c of clients) assert.equal(c.received, c.sent, `connection ${c.id}`);
    for (const c of clients) c.sock.destroy();
  } finally {
    svc.stop();
  }
});
