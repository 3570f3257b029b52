// In place, a next image whose fd limit leaves no room above the fds it inherits (a wrapper
// lowered it: `sh -c 'ulimit -n N; exec node …'`, soft and hard, so not even Node can raise
// it) does not boot and then die on its first poll: it refuses at boot with the one-line fatal
// naming the limit (it needs the highest carried fd plus 64 below it). N here leaves Node room
// to load its code (below that, Node itself fails before any code runs). luo's guard brings
// the previous image back with its own fd limit restored where this process may raise it
// again (CAP_SYS_RESOURCE): then every connection carries on (test/txn-harness.ts checks it).
// Where it may not, the previous image could not hold them either: the guard says so in one
// line instead of exec'ing it to die, and the agent reports that no version serves.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import test from 'node:test';
import { imagePath } from './helpers.js';
import { assertOldServes, startTxn, stopTxn, update } from './txn-harness.js';

const CAP_SYS_RESOURCE = 24n;
const mayRaiseHardLimits = ((BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]}`) >> CAP_SYS_RESOURCE) & 1n) === 1n;

test('a next image whose fd limit is below what the carried fds need refuses at boot in one line; the previous one comes back where its limit can be restored', { timeout: 90_000 }, async () => {
  const t = await startTxn([], { streaming: 40, idle: 20 });
  try {
    const from = t.svc.lines.length;
    process.kill(t.pid, 'SIGUSR1');
    const highest = (await t.svc.next((l) => l.event === 'fds' && t.svc.lines.indexOf(l) >= from)).highest as number;
    const limit = highest + 40;
    const wrapped = ['/bin/sh', '-c', `ulimit -n ${limit}; exec "${process.execPath}" "${imagePath('txn-service')}"`];
    const run = await update(t, ['--timeout', '20'], null, [], wrapped);
    const fatal = `ERR_HANDOVER: this image's fd limit (RLIMIT_NOFILE ${limit}, hard ${limit}) is too low for the fds handed over (the highest is `;
    if (mayRaiseHardLimits) {
      await assertOldServes(t, run, 'rolled-back', /the next version could not boot: ERR_HANDOVER: this image's fd limit/, 'exec');
      assert.ok((run.report.error as string).includes(fatal), run.report.error);
      return;
    }
    assert.equal(run.code, 1, run.stderr + run.stdout);
    assert.match(run.report.error as string, /the service process \(pid \d+\) is gone: no version serves/);
    const lines = t.svc.stderr.trim().split('\n');
    assert.ok(lines[0]!.startsWith(`luo: fatal: ${fatal}`), t.svc.stderr);
    assert.ok(lines.some((l) => l.startsWith(`luo: cannot bring the previous version back: this process's fd limit is ${limit} now`) && l.includes('cannot be raised back to 20000 (that takes CAP_SYS_RESOURCE)')), t.svc.stderr);
    assert.doesNotMatch(t.svc.stderr, /^\s+at /m, 'no stack trace');
  } finally {
    stopTxn(t);
  }
});
