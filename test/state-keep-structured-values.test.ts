// luo.keep carries a structured JS value (a Map of objects holding Dates and Sets, a
// Float64Array, a bigint, nested arrays) across updates in both modes: saved at FREEZE,
// loaded in the next version; and two maps in one service stay independent.
import assert from 'node:assert/strict';
import test from 'node:test';
import { startState, updateState } from './state-harness.js';

test('a kept nested value with Maps, Dates and typed arrays, and two independent maps, across updates', { timeout: 90_000 }, async () => {
  const svc = await startState({ STATE_N: '5000' });
  try {
    for (let u = 1; u <= 2; u++) {
      const r = await updateState(svc, { successor: u === 2 });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.next!.keep, true, 'the kept value, every type as it was');
      assert.equal(r.next!.counters, true, 'map "counters": every counter as the last generation left it');
      assert.equal(r.next!.check.ok, true, 'map "kv", independent of it');
    }
  } finally {
    svc.stop();
  }
});
