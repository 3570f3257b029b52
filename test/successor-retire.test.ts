// After handing everything to its successor, the old image closes what it handed over (so a
// connection the successor closes is not held open by a process still exiting) and lowers
// every one of its threads to the lowest priority (Linux keeps a nice value per thread; the
// one that tears the memory down is whichever exits last), so its exit never takes CPU from
// the successor that is serving by then.
import assert from 'node:assert/strict';
import test from 'node:test';
import { imagePath, jsonLines, runNode } from './helpers.js';

test('the old image closes every fd it handed over and lowers all its threads before it exits', async () => {
  const r = await runNode(imagePath('retire-probe'));
  assert.equal(r.code, 0, r.stderr);
  const out = jsonLines(r.stdout)[0]!;
  assert.equal(out.handedStillOpen, 0);
  assert.equal(out.keptOpen, true, 'fds it did not hand over are left alone');
  assert.ok((out.threads as number) >= 3, `several threads (${out.threads})`);
  assert.deepEqual([...new Set(out.nice as number[])], [19], `every thread at nice 19: ${JSON.stringify(out.nice)}`);
});
