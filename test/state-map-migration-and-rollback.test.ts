// Versioned data: a next version reading format 2 migrates format 1 at boot (every entry
// rewritten, checked); one that fails after migrating, before FINISH, is rolled back and the
// previous version (format 1 code) reads its format 1 data intact, in both modes, since the
// migration's writes never reached it; code older than the data is refused with EPROTO, and the
// data is carried on untouched for a version that can read it.
import assert from 'node:assert/strict';
import test from 'node:test';
import { lineAfter, startState, updateState } from './state-harness.js';

for (const successor of [false, true]) {
  test(`${successor ? 'successor' : 'in place'}: a migration rolled back leaves format 1 to the previous version; one that commits gives format 2`, { timeout: 120_000 }, async () => {
    const svc = await startState({ STATE_N: '20000' });
    try {
      const bad = await updateState(svc, { successor, args: ['format=2', 'fail=after-migrate'] });
      assert.equal(bad.code, 1, bad.stdout + bad.stderr);
      assert.equal(bad.report.outcome?.outcome, 'rolled-back', JSON.stringify(bad.report));
      assert.match(String(bad.report.error), /failing after the migration/);
      // The previous version reads its own data, format 1, whole.
      const before = svc.lines.length;
      process.kill(svc.pid, 'SIGUSR2');
      const c = await lineAfter(svc, before, (l) => l.event === 'check');
      assert.equal(c.version, 1);
      assert.equal(c.ok, true, JSON.stringify(c));
      assert.ok(c.size > 19_000);

      const good = await updateState(svc, { successor, args: ['format=2'] });
      assert.equal(good.code, 0, good.stdout + good.stderr);
      assert.equal(good.next!.version, 2);
      assert.equal(good.next!.migrated, c.size, 'every entry migrated');
      assert.equal(good.next!.check.ok, true, JSON.stringify(good.next!.check));

      const old = await updateState(svc, { successor, args: ['format=1'] });
      assert.equal(old.code, 0, 'the update goes through; the code refuses the data it cannot read');
      assert.equal(old.next!.mapError.code, 'EPROTO');
      assert.match(old.next!.mapError.message, /"kv" holds data of version 2; this code reads up to version 1/);
      // The map it could not read is carried on untouched: format 2 code finds it whole.
      const again = await updateState(svc, { successor, args: ['format=2', `against=${(old.next!.gen as number) - 1}`, 'verify-only'] });
      assert.equal(again.code, 0, again.stdout + again.stderr);
      assert.equal(again.next!.version, 2);
      assert.equal(again.next!.check.ok, true, JSON.stringify(again.next!.check));
    } finally {
      svc.stop();
    }
  });
}
