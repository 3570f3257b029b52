// A successor that took its idle connections' counters from a base block read ahead (not from
// the table at the freeze) hands them over with the right counters: when its own successor
// then fails after taking over, it resumes every connection that one did not touch (the
// kernel's byte counters match its own), and closes and counts only those it touched. Wrong
// counters would close the idle ones as touched.
import assert from 'node:assert/strict';
import test from 'node:test';
import { assertOldServes, startTxn, stopTxn, update } from './txn-harness.js';

test('after a successor update through a base block, a failed next update resumes the idle connections exactly once', { timeout: 120_000 }, async () => {
  const t = await startTxn([], { streaming: 12, idle: 40 });
  try {
    const first = await update(t, ['--successor', '--timeout', '10'], null);
    assert.equal(first.code, 0, `${first.stderr}\n${first.stdout}`);
    const serving = await t.svc.next((l) => l.event === 'ready' && l.pid !== t.pid);
    t.pid = serving.pid as number;
    const run = await update(t, ['--successor', '--timeout', '3'], 'kill-after-boot');
    await assertOldServes(t, run, 'rolled-back', /the successor crashed after it took over: it was killed by SIGKILL/, 'successor');
  } finally {
    stopTxn(t);
  }
});
