// Drop-in mode: a next version that never listens again on one of the previous version's
// addresses gets it released at FINISH (it stops accepting there), and the agent's report
// names it; the address it does listen on is carried.
import assert from 'node:assert/strict';
import net from 'node:net';
import test from 'node:test';
import { DropIn } from './dropin-harness.js';

const connects = (port: number): Promise<boolean> => new Promise((resolve) => {
  const s = net.connect(port, '127.0.0.1');
  s.once('connect', () => (s.destroy(), resolve(true)));
  s.once('error', () => resolve(false));
});

test('a listener the next version does not take back is released at FINISH and named', { timeout: 60_000 }, async () => {
  const svc = await DropIn.start('two-ports-app.mjs', ['v1']);
  try {
    const extra = Number(svc.lines.find((l) => l.event === 'listening')!.extra);
    assert.equal(await connects(extra), true);
    const r = await svc.update({ args: ['one-port'] });
    assert.equal(r.code, 0, r.stdout + r.stderr + svc.stderr);
    const notCarried = (r.report.phases as Array<{ phase: string; detail?: string }>).filter((p) => p.phase === 'not carried').map((p) => p.detail);
    assert.equal(notCarried.length, 1, JSON.stringify(r.report.phases));
    assert.match(notCarried[0]!, new RegExp(`http 127\\.0\\.0\\.1:${extra} was released at FINISH: the next version never took it back`));
    const released = (r.report.outcome.carried as Array<{ label: string; released: boolean }>).filter((e) => e.released);
    assert.deepEqual(released.map((e) => e.label), [`http 127.0.0.1:${extra}`]);
    assert.equal(await connects(svc.port), true, 'the main port is carried');
    assert.equal(await connects(extra), false, 'the released one no longer accepts');
  } finally {
    svc.stop();
  }
});
