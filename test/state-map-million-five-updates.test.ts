// A luo.map of 1 000 000 entries through five live updates, alternating in place and
// successor: each next version opens it where it is and checks every entry (deleted ones gone,
// overwritten ones with their longer value, the ones added by the generation before), then
// deletes, overwrites and adds for the next; the map grows across updates. A second map and a
// kept value ride along.
import assert from 'node:assert/strict';
import test from 'node:test';
import { startState, updateState } from './state-harness.js';

test('a map of 1 000 000 entries survives five updates in both modes, every entry checked', { timeout: 300_000 }, async () => {
  const svc = await startState({ STATE_N: '1000000' });
  try {
    const first = svc.lines.find((l) => l.event === 'listening')!;
    assert.equal((first.stats as { entries: number }).entries, 1_000_000);
    let reserved = (first.stats as { bytesReserved: number }).bytesReserved;
    for (let u = 1; u <= 5; u++) {
      const successor = u % 2 === 0;
      const r = await updateState(svc, { successor });
      assert.equal(r.code, 0, `update ${u} (${successor ? 'successor' : 'in place'}): ${r.stdout}\n${r.stderr}\n${svc.stderr.slice(-2000)}`);
      const n = r.next!;
      assert.ok(n, 'the next version said it listens');
      assert.equal(n.gen, u);
      assert.deepEqual(n.check, { ok: true, size: n.check.expected, expected: n.check.expected, bad: [] }, `update ${u}: every entry as generation ${u - 1} left it`);
      assert.ok(n.check.expected > 990_000);
      assert.equal(n.counters, true, 'the second map, independent');
      assert.equal(n.keep, true, 'the kept value');
      const st = n.stats as { entries: number; bytesReserved: number; bytesFree: number };
      assert.ok(st.bytesReserved >= reserved, 'the map grows, never shrinks under its entries');
      reserved = st.bytesReserved;
    }
  } finally {
    svc.stop();
  }
});
