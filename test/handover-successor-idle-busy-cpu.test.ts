// A successor prepares in SCHED_IDLE, on CPU time the serving image does not want. On a CPU
// with no idle time it would get none: seen starving there (runnable, and not running), it is
// given the normal class (or, at the latest, after a quarter of the wait), so an update with
// a short timeout (3 s here, far less than IDLE_MAX_MS: in SCHED_IDLE that long, it would time
// out) still succeeds on a busy machine. The service, its successor and a busy loop
// (at nice 5: a normal-class task, which SCHED_IDLE yields to) share one CPU (taskset), so
// the other CPUs stay free for whatever else runs.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import test, { after } from 'node:test';
import * as sys from '../src/sys/index.js';
import { Service, StreamClient } from './echo-harness.js';
import { hasTool, tmpDir } from './helpers.js';

// Only where luo may give a successor its class back does it put one in SCHED_IDLE.
const canIdle = sys.mayLeaveIdle();
// The busy loop never outlives this file, even after a timed-out test (whose finally never runs).
let hog: ReturnType<typeof spawn> | null = null;
after(() => hog?.kill('SIGKILL'));

test('a successor preparing in SCHED_IDLE on a CPU with no idle time still gets ready within a short timeout, and the update succeeds', {
  timeout: 60_000,
  skip: !hasTool('taskset') ? 'needs taskset (util-linux)' : !canIdle ? 'luo may not give a successor its class back here (CAP_SYS_NICE or RLIMIT_NICE), so it never puts one in SCHED_IDLE' : false,
}, async () => {
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', ECHO_SUCCESSOR_TIMEOUT_MS: '3000' });
  try {
    const port = await svc.start();
    // Every thread of the service on CPU 0; the successor it starts inherits that.
    const pinned = spawnSync('taskset', ['-a', '-p', '-c', '0', String(svc.child.pid)], { encoding: 'utf8' });
    assert.equal(pinned.status, 0, pinned.stderr);
    hog = spawn('taskset', ['-c', '0', 'nice', '-n', '5', process.execPath, '-e', 'for (;;);'], { stdio: 'ignore' });
    const clients = Array.from({ length: 5 }, (_, i) => new StreamClient(i, port));
    await Promise.all(clients.map((c) => c.connected()));
    clients.forEach((c) => c.pump(4096));
    const pid = svc.pid;
    const r = await svc.update();
    assert.equal(r.event, 'ready', JSON.stringify(r));
    assert.notEqual(svc.pid, pid);
    clients.forEach((c) => c.pump(4096));
    await Promise.all(clients.map((c) => c.settled()));
    for (const c of clients) {
      assert.equal(c.error, null);
      assert.equal(c.closed, false);
      assert.equal(c.received, c.sent);
    }
    for (const c of clients) c.sock.destroy();
  } finally {
    hog?.kill('SIGKILL');
    svc.stop();
  }
});
