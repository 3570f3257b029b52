// Successor mode as a transaction: whatever the next version does before FINISH, the old one
// goes on serving. For each fault, at each moment (before the handover: the update is
// cancelled; after it: rolled back), the agent reports why, the old version serves with its
// memory as at the freeze, and every connection is either carried on exactly once or, if the
// successor touched it, closed and counted (test/txn-harness.ts checks all of it).
import test from 'node:test';
import { assertOldServes, startTxn, stopTxn, update } from './txn-harness.js';

const cases: Array<[string, 'cancelled' | 'rolled-back', RegExp, string[]?]> = [
  ['kill-at-spawn', 'cancelled', /the successor crashed before it was ready: it was killed by SIGKILL/],
  ['stop-at-spawn', 'cancelled', /the successor was stopped \(SIGSTOP\) before it was ready; it was killed/],
  ['throw-top', 'cancelled', /the successor crashed before it was ready: it exited with status 1: it threw Error: txn: thrown at top level/],
  ['hang-before-boot-blocked', 'cancelled', /the successor was too slow: no answer within 3000 ms before it was ready; it was killed/],
  ['stop-at-ready', 'cancelled', /the successor was stopped \(SIGSTOP\) before it was ready/],
  ['kill-after-early', 'cancelled', /the successor crashed while taking the fds sent early: it was killed by SIGKILL/],
  ['stop-after-early', 'cancelled', /the successor was stopped \(SIGSTOP\) while taking the fds sent early/],
  ['kill-at-ahead', 'cancelled', /the successor crashed while reading memory ahead: it was killed by SIGKILL/],
  ['stop-at-ahead', 'cancelled', /the successor was stopped \(SIGSTOP\) while reading memory ahead/],
  ['throw-after-boot', 'rolled-back', /the successor crashed after it took over: it exited with status 1: it threw Error: txn: thrown after boot\(\)/],
  ['kill-after-boot', 'rolled-back', /the successor crashed after it took over: it was killed by SIGKILL/],
  ['stop-after-boot', 'rolled-back', /the successor was stopped \(SIGSTOP\) after it took over; it was killed/],
  ['exit-after-restore', 'rolled-back', /the successor crashed after it took over: it exited with status 3;/],
  ['hang-after-boot-alive', 'rolled-back', /the successor was too slow: its device was not up within 3 s; it was killed/],
  ['hang-after-boot-blocked', 'rolled-back', /the successor was too slow: its device was not up within 3 s; it was killed/],
  ['die-on-probation', 'rolled-back', /the next version exited during its probation \([\d.]+ s into 3 s\): the successor crashed after it took over: it exited with status 4/, ['--probation', '3s']],
];

for (const [fault, outcome, reason, flags] of cases) {
  test(`successor: ${fault}: ${outcome === 'cancelled' ? 'cancelled before the handover' : 'rolled back after it'}, the old version serves, nothing lost silently`, { timeout: 90_000 }, async () => {
    const t = await startTxn();
    try {
      const run = await update(t, ['--successor', '--timeout', '3', ...(flags ?? [])], fault);
      await assertOldServes(t, run, outcome, reason, 'successor');
    } finally {
      stopTxn(t);
    }
  });
}

test('successor: stopped after the early send, while the old version is frozen: it resumes within the freeze deadline (1 s), not the boot timeout', { timeout: 90_000 }, async () => {
  const t = await startTxn(['--freeze-delay', '300']);
  try {
    // When the old version says it freezes, the successor is up and holds the early fds: stop it.
    const from = t.svc.lines.length;
    const stopper = t.svc.next((l) => t.svc.lines.indexOf(l) >= from && l.event === 'freezing').then(() => {
      const s = t.svc.lines.find((l) => l.event === 'started' && l.pending === 'successor' && t.svc.lines.indexOf(l) >= from);
      if (s) process.kill(s.pid as number, 'SIGSTOP');
    });
    const run = await update(t, ['--successor', '--timeout', '20'], null, ['--freeze-delay', '300']);
    await stopper;
    await assertOldServes(t, run, 'cancelled', /the successor was stopped \(SIGSTOP\) while taking the handover; it was killed|the successor was too slow: it did not take the handover within 1000 ms/, 'successor');
  } finally {
    stopTxn(t);
  }
});

test('successor: --check failing: rolled back, the old version serves', { timeout: 90_000 }, async () => {
  const t = await startTxn();
  try {
    const run = await update(t, ['--successor', '--timeout', '10', '--check', 'echo not healthy >&2; exit 7', '--check-timeout', '1'], null);
    await assertOldServes(t, run, 'rolled-back', /the check `echo not healthy >&2; exit 7` kept failing for 1 s \(exit status 7: not healthy\)/, 'successor');
  } finally {
    stopTxn(t);
  }
});
