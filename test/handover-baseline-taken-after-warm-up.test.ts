// Successor mode: the running image warms the pause's code (on made-up input, in slices while
// it serves) before it takes the baseline of its idle connections, not after: every
// connection that moves between the baseline and the freeze is stopped and snapshotted in
// the pause, and under 10 000 requests a second at 10 000 connections the warm-up (100-300
// ms there) let 2 000-6 000 of them move. Here, 300 connections (enough for the warm-up to
// run), each image's own trace lines in order: warmed, baseline, read ahead, freeze; and
// every byte once.
import assert from 'node:assert/strict';
import test from 'node:test';
import { assertEveryByteOnce, connectClients, Service } from './echo-harness.js';
import { tmpDir } from './helpers.js';

test('the baseline of the idle connections is taken after the warm-up, right before the freeze', { timeout: 120_000 }, async () => {
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', LUO_TRACE: '1' });
  try {
    const port = await svc.start();
    const clients = await connectClients(port, 300, { echo: 64 });
    const from = svc.stderr.length;
    const r = await svc.update();
    assert.equal(r.event, 'ready', `${JSON.stringify(r)}; stderr: ${svc.stderr.slice(-3000)}`);
    assert.equal(r.restored, 300);
    // The old image's lines (the first pid to trace the warm-up), in the order it wrote them.
    const lines = svc.stderr.slice(from).split('\n').map((l) => /^luo-trace (\d+) \S+ (.*)$/.exec(l)).filter((m) => m !== null);
    const pid = lines.find((m) => m[2] === 'successor: the freeze warmed')?.[1];
    assert.ok(pid, `the running image warmed the pause; trace: ${svc.stderr.slice(from).slice(-2000)}`);
    const own = lines.filter((m) => m[1] === pid).map((m) => m[2]);
    const at = (what: RegExp): number => {
      const i = own.findIndex((l) => what.test(l));
      assert.ok(i >= 0, `${what} in the running image's trace: ${own.join(' | ').slice(-2000)}`);
      return i;
    };
    const warmed = at(/^successor: the freeze warmed$/);
    const baseline = at(/^server: baseline of \d+ idle connections/);
    const ahead = at(/^successor: read ahead \d+ of \d+ regions$/);
    const freeze = at(/^freeze: start$/);
    assert.ok(warmed < baseline && baseline < ahead && ahead < freeze, `warmed (${warmed}) < baseline (${baseline}) < read ahead (${ahead}) < freeze (${freeze})`);
    await assertEveryByteOnce(clients, 32);
  } finally {
    svc.stop();
  }
});
