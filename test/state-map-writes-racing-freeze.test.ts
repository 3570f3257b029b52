// A service writing a luo.map without pause while updates happen (both modes): every entry the
// next version finds is whole, and it finds exactly the last 1 000 writes the old version
// made: none lost, none torn, including those made while freeze callbacks ran (a subsystem's
// freeze lets the event loop turn). A write tried once FROZEN is refused (EBUSY, naming why)
// instead of landing in memory the next version is about to read.
import assert from 'node:assert/strict';
import test from 'node:test';
import { lineAfter, startState, updateState } from './state-harness.js';

test('writes racing a FREEZE: no torn entry, none lost; writes after it refused with EBUSY', { timeout: 120_000 }, async () => {
  const svc = await startState({ STATE_RACE: '1' });
  try {
    let last = -1;
    for (let u = 1; u <= 4; u++) {
      const successor = u % 2 === 0;
      const before = svc.lines.length;
      await new Promise((r) => setTimeout(r, 300)); // let it write
      const r = await updateState(svc, { successor });
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${svc.stderr.slice(-2000)}`);
      const race = r.next!.race as { torn: number; entries: number; consecutive: boolean; last: number };
      assert.equal(race.torn, 0, 'no torn entry');
      assert.equal(race.entries, 1000);
      assert.equal(race.consecutive, true, 'the last 1 000 writes, none missing');
      assert.ok(race.last > last + 1000, `it kept writing (${race.last} after ${last})`);
      last = race.last;
      // The writer ran through the freeze callbacks (a subsystem's takes 50 ms); a write tried
      // once FROZEN was refused, naming why.
      const late = await lineAfter(svc, before, (l) => l.event === 'late-write');
      assert.equal(late.code, 'EBUSY', JSON.stringify(late));
      assert.match(String(late.message), /frozen: this version is handing over to the next one/);
    }
  } finally {
    svc.stop();
  }
});
