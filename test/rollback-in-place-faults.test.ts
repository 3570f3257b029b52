// In place as a transaction: a next image that throws (at top level, or after boot()),
// exits, or hangs (its event loop alive, or blocked) before FINISH is replaced by the
// previous image, exec'd again in the same pid with the same handover by luo's guard: it
// boots UPDATED, restores everything (closing only the connections the failed image used),
// finds its memory as it handed it over, and the agent says why and finishes the rollback
// (test/txn-harness.ts checks all of it).
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
  ['die-on-probation', /the next version exited during its probation \([\d.]+ s into 3 s\): the next version exited with status 4 before it finished its update/, ['--probation', '3s']],
];

for (const [fault, reason, flags] of cases) {
  test(`in place: ${fault}: the previous image comes back in the same pid, the agent says why`, { timeout: 90_000 }, async () => {
    const t = await startTxn();
    try {
      const run = await update(t, ['--timeout', '3', ...(flags ?? [])], fault);
      await assertOldServes(t, run, 'rolled-back', reason, 'exec');
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
