// A map whose header was damaged on its way to the next version (a byte flipped once FROZEN,
// after its checksum was written): luo.map refuses it with EBADMSG naming the map and what is wrong,
// and the service is up and updated all the same (its other map and kept value intact); with
// onDamaged: 'fresh' the map starts empty instead.
import assert from 'node:assert/strict';
import test from 'node:test';
import { startState, updateState } from './state-harness.js';

for (const mode of ['throw', 'fresh'] as const) {
  test(`a damaged map header: ${mode === 'throw' ? 'EBADMSG, the service up' : "onDamaged: 'fresh' starts it empty"}`, { timeout: 90_000 }, async () => {
    const svc = await startState({}, ['damage']);
    try {
      const r = await updateState(svc, { args: mode === 'fresh' ? ['fresh'] : [] });
      assert.equal(r.code, 0, `the update itself succeeds: ${r.stdout}\n${r.stderr}`);
      const n = r.next!;
      if (mode === 'throw') {
        assert.equal(n.mapError.code, 'EBADMSG');
        assert.match(n.mapError.message, /map "kv": its header's checksum does not match/);
        assert.match(n.mapError.message, /onDamaged: 'fresh'/, 'it says what to do');
      } else {
        assert.equal(n.mapError, undefined);
        assert.deepEqual(n.check, { size: 0 });
        assert.match(svc.stderr, /map "kv": its header's checksum does not match .*started empty/);
      }
      assert.equal(n.counters, true, 'the other map is intact');
      assert.equal(n.keep, true, 'the kept value too');
    } finally {
      svc.stop();
    }
  });
}
