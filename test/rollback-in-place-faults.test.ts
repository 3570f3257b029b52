// In place as a transaction: a next image that throws (at top level, or after boot()),
// exits, or hangs (its event loop alive, or blocked) before FINISH is replaced by the
// previous image, exec'd again in the same pid with the same handover by luo's guard: it
// boots UPDATED, restores everything (closing only the connections the failed image used),
// finds its memory as it handed it over, and the agent says why and finishes the rollback
// (test/txn-harness.ts checks all of it).
import assert from 'node:assert/strict';
import test from 'node:test';
import { assertOldServes, startTxn, stopTxn, update } from './txn-harness.js';

const cases: Array<[string, RegExp, string[]?]> = [
  ['throw-top', /the next version threw Error: txn: thrown at top level \(at .*txn-service\.js:\d+:\d+\) before it finished its update/],
  ['throw-after-boot', /the next version threw Error: txn: thrown after boot\(\) \(at .*\) before it finished its update/],
  ['exit-after-restore', /the next version exited with status 3 before it finished its update/],
  ['hang-before-boot-alive', /the next version was not up \(its control device started\) within [\d.]+ s \(hung\)/],
  ['hang-before-boot-blocked', /the next version was not up \(its control device started\) within [\d.]+ s \(hung, its event loop blocked for the last [\d.]+ s\)/],
  ['hang-after-boot-alive', /the next version was not up \(its control device started\) within [\d.]+ s \(hung\)/],
  ['hang-after-boot-blocked', /the next version was not up \(its control device started\) within [\d.]+ s \(hung, its event loop blocked for the last [\d.]+ s\)/],
  // Up, then stuck: the device's thread took the agent's request, the main thread never
  // answers it. The agent asks again instead of waiting on it; the guard says where it stood.
  ['hang-after-device-blocked', /the next version did not finish its update by the deadline \(hung, its event loop blocked for the last [\d.]+ s; its control device had waited [\d.]+ s for the main thread to answer a request \(0 answered before\)\)/],
  ['die-on-probation', /the next version exited during its probation \([\d.]+ s into 3 s\): the next version exited with status 4 before it finished its update/, ['--probation', '3s']],
];

for (const [fault, reason, flags] of cases) {
  test(`in place: ${fault}: the previous image comes back in the same pid, the agent says why`, { timeout: 90_000 }, async () => {
    const t = await startTxn();
    try {
      const run = await update(t, ['--timeout', '3', ...(flags ?? [])], fault);
      await assertOldServes(t, run, 'rolled-back', reason, 'exec');
      if (fault === 'hang-after-device-blocked') {
        const up = (run.report.phases as Array<{ phase: string; detail?: string }>).find((p) => p.phase === 'next image up');
        assert.match(up?.detail ?? '', /^not up within 3 s \(the service took the connection but did not answer GET_UPDATE within [\d.]+ s\)$/, JSON.stringify(run.report));
      }
    } finally {
      stopTxn(t);
    }
  });
}

test('in place: --check failing: the next image is asked to roll back, and the previous one comes back', { timeout: 90_000 }, async () => {
  const t = await startTxn();
  try {
    const run = await update(t, ['--timeout', '10', '--check', 'exit 9', '--check-timeout', '1'], null);
    await assertOldServes(t, run, 'rolled-back', /the check `exit 9` kept failing for 1 s \(exit status 9\)/, 'exec');
  } finally {
    stopTxn(t);
  }
});
