// From the handover to its outcome the previous image serves nothing (its main thread waits for
// the successor's FINISH, or its failure), but its other threads could go on with what they had
// started: four of them (V8's helpers, most likely marking its heap) took both cores of a
// two-core machine for the successor's whole pause. They wait in SCHED_IDLE meanwhile, and get
// the normal class back at the outcome: before the previous image serves again when the
// successor fails.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import test from 'node:test';
import * as sys from '../src/sys/index.js';
import { Service, StreamClient } from './echo-harness.js';
import { tmpDir } from './helpers.js';

// Only where luo may give them their class back does it move them (as for a successor).
const canIdle = sys.mayLeaveIdle();
const skip = canIdle ? false : 'luo may not give threads their class back here (CAP_SYS_NICE or RLIMIT_NICE), so it never moves them';

/** Each thread's scheduling policy (proc(5): stat field 41; 0 SCHED_OTHER, 5 SCHED_IDLE). */
function policies(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`).map(Number)) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // from field 3 on
      out.set(tid, Number(fields[41 - 3]));
    } catch { /* the thread exited */ }
  }
  return out;
}

/** The previous image, its successor restored and not yet finished, or failed. */
async function handOver(svc: Service): Promise<{ old: number; clients: StreamClient[]; successor: number }> {
  const port = await svc.start();
  const clients = Array.from({ length: 5 }, (_, i) => new StreamClient(i, port));
  await Promise.all(clients.map((c) => c.connected()));
  const old = svc.pid;
  const before = svc.lines.length;
  process.kill(old, 'SIGUSR2');
  const restored = await svc.next((l) => svc.lines.indexOf(l) >= before && l.event === 'restored');
  return { old, clients, successor: restored.pid as number };
}

test('between the handover and the successor\'s FINISH, the previous image\'s threads other than its main one wait in SCHED_IDLE', { timeout: 60_000, skip }, async () => {
  // The successor waits 3 s before its FINISH (ECHO_FINISH_DELAY_MS): the previous image
  // waits for it all that time.
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', ECHO_FINISH_DELAY_MS: '3000' });
  try {
    const { old, clients } = await handOver(svc);
    const p = policies(old);
    assert.equal(p.get(old), sys.SCHED_OTHER, 'its main thread keeps its class (it answers the successor)');
    const others = [...p].filter(([tid]) => tid !== old);
    assert.ok(others.length > 0, 'a Node process has threads other than its main one');
    assert.deepEqual(others.filter(([, pol]) => pol !== sys.SCHED_IDLE), [], 'every other thread waits in SCHED_IDLE');
    // The successor serves meanwhile, and finishes.
    for (const c of clients) c.pump(256);
    await Promise.all(clients.map((c) => c.settled()));
    const ready = await svc.next((l) => l.event === 'ready' && l.pid !== old);
    assert.equal(ready.event, 'ready');
    for (const c of clients) {
      assert.equal(c.error, null);
      assert.equal(c.received, c.sent);
      c.sock.destroy();
    }
  } finally {
    svc.stop();
  }
});

test('when the successor fails after the handover, the previous image\'s threads get the normal class back before it serves again', { timeout: 60_000, skip }, async () => {
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', ECHO_FINISH_DELAY_MS: '30000' });
  try {
    const { old, clients, successor } = await handOver(svc);
    assert.ok([...policies(old)].some(([tid, pol]) => tid !== old && pol === sys.SCHED_IDLE), 'aside while the successor runs');
    const before = svc.lines.length;
    process.kill(successor, 'SIGKILL');
    const failed = await svc.next((l) => svc.lines.indexOf(l) >= before && l.event === 'update-failed');
    assert.equal(failed.code, 'ECHILD', JSON.stringify(failed));
    assert.deepEqual([...policies(old)].filter(([, pol]) => pol !== sys.SCHED_OTHER), [], 'every thread in the normal class again');
    // And it serves every connection again.
    for (const c of clients) c.pump(256);
    await Promise.all(clients.map((c) => c.settled()));
    for (const c of clients) {
      assert.equal(c.error, null);
      assert.equal(c.closed, false);
      assert.equal(c.received, c.sent);
      c.sock.destroy();
    }
  } finally {
    svc.stop();
  }
});
