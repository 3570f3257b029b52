// After handing everything to its successor, the old image closes what it handed over (so a
// connection the successor closes is not held open by a process still exiting) and puts every
// one of its threads in SCHED_IDLE (Linux schedules threads; the one that tears the memory
// down is whichever exits last), so its exit never takes CPU from the successor serving.
import assert from 'node:assert/strict';
import test from 'node:test';
import { imagePath, jsonLines, runNode } from './helpers.js';

test('the old image closes every fd it handed over and puts all its threads in SCHED_IDLE before it exits', async () => {
  const r = await runNode(imagePath('retire-probe'));
  assert.equal(r.code, 0, r.stderr);
  const out = jsonLines(r.stdout)[0]!;
  assert.equal(out.handedStillOpen, 0);
  assert.equal(out.keptOpen, true, 'fds it did not hand over are left alone');
  assert.ok((out.threads as number) >= 3, `several threads (${out.threads})`);
  assert.deepEqual([...new Set(out.policy as number[])], [5], `every thread in SCHED_IDLE (5): ${JSON.stringify(out.policy)}`);
});
