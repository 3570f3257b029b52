// After a successor handover the idle connections are adopted in slices while the new image
// serves; one that gets a request meanwhile is adopted at the next slice (found among the fds
// watched since before the freeze), not at its turn in table order, which at 10 000
// connections under load came up to 1.5 s later. Here 2 000 idle connections, adopted one per
// slice: the last one opened sends once the new image has begun adopting, and is adopted long
// before its turn, its bytes echoed exactly once.
import assert from 'node:assert/strict';
import test from 'node:test';
import { rankOfLateSender } from './adoption-harness.js';

test('an idle connection that gets input while the others are adopted is adopted at the next slice', { timeout: 120_000 }, async () => {
  const N = 2000;
  const rank = await rankOfLateSender(N, { ECHO_ADOPT_BATCH: '1' });
  assert.ok(rank < N / 2, `adopted when it had input (${rank} before it), not at its turn (${N - 1})`);
});
