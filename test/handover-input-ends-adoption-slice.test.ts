// A successor adopts the idle connections in slices while it serves; a connection that gets
// input in the middle of a slice is adopted within a few adoptions and the slice ends, so that
// it is served at once: it does not wait for the rest of the slice. Here 2 000 idle
// connections, all in one slice (no batch or time limit), each adoption made slow (a heavy
// connection handler, 300 µs): the last one opened sends once the new image has begun
// adopting, and is adopted long before its turn in table order, its bytes echoed exactly once.
import assert from 'node:assert/strict';
import test from 'node:test';
import { rankOfLateSender } from './adoption-harness.js';

test('an idle connection that gets input in the middle of an adoption slice ends that slice and is adopted at once', { timeout: 120_000 }, async () => {
  const N = 2000;
  const rank = await rankOfLateSender(N, { ECHO_ADOPT_BATCH: String(N), ECHO_ADOPT_SLICE_MS: '60000', ECHO_ADOPT_COST_US: '300' });
  assert.ok(rank < N / 2, `adopted when it had input (${rank} before it), not at its turn (${N - 1})`);
});
