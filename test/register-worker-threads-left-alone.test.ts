// Node runs --import preloads in worker threads too. Drop-in mode is the main thread's: an
// app with a worker thread holds one luo (one arena) before and after an update, not one per
// thread.
import assert from 'node:assert/strict';
import test from 'node:test';
import { DropIn } from './dropin-harness.js';

test('a drop-in app with a worker thread: one luo in the process, before and after an update', { timeout: 90_000 }, async () => {
  const svc = await DropIn.start('worker-app.mjs', ['v1']);
  try {
    assert.equal(svc.lines.find((l) => l.event === 'listening')!.arenas, 1);
    const before = svc.lines.length;
    const r = await svc.update({ args: ['v2'] });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const next = await svc.line((l) => svc.lines.indexOf(l) >= before && l.event === 'listening');
    assert.equal(next.v, 'v2');
    assert.equal(next.arenas, 1);
  } finally {
    svc.stop();
  }
});
