// `luo update` against the echo example: the whole update with connections streaming; and
// when the next image cannot start, a report that says where it failed.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test, { after } from 'node:test';
import { StreamClient } from './echo-harness.js';
import { cliPath, distRoot, jsonLines, runNode, tmpDir } from './helpers.js';

const example = path.join(distRoot, 'examples', 'echo', 'main.js');
// Services this file starts: killed when the file ends, even after a timed-out test.
const started: ChildProcess[] = [];
after(() => started.forEach((c) => c.kill('SIGKILL')));

async function startExample(): Promise<{ svc: ChildProcess; port: number; rundir: string; out: () => string }> {
  const rundir = tmpDir('luo-cli-');
  const svc = spawn(process.execPath, [example, '--port', '0', '--rundir', rundir], { stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(svc);
  let out = '';
  svc.stdout!.on('data', (d) => (out += d));
  svc.stderr!.on('data', (d) => (out += d));
  while (!/listening on 127\.0\.0\.1:(\d+)/.test(out)) await new Promise((r) => setTimeout(r, 10));
  while (!fs.existsSync(path.join(rundir, 'liveupdate'))) await new Promise((r) => setTimeout(r, 10));
  return { svc, port: Number(/listening on 127\.0\.0\.1:(\d+)/.exec(out)![1]), rundir, out: () => out };
}

/** After a failed update: back to NORMAL, and the old image still echoes. */
async function assertStillServing(rundir: string, port: number): Promise<void> {
  const st = await runNode(cliPath, ['state', '--rundir', rundir]);
  assert.equal(st.stdout, 'normal\n', 'back to NORMAL, old image still running');
  const c = new StreamClient(1, port);
  await c.connected();
  c.pump(100);
  await c.settled();
  assert.equal(c.received, 100, 'still serving');
  c.sock.destroy();
}

/**
 * 50 connections stream through two `luo update --json` runs (with `flags`); `check` gets
 * each report. Then every byte came back once, no connection closed, the state is NORMAL.
 */
async function updateTwiceWhileStreaming(port: number, rundir: string, flags: string[], check: (phases: Array<{ phase: string; ms: number; detail?: string }>) => void): Promise<void> {
  const clients = Array.from({ length: 50 }, (_, i) => new StreamClient(i, port));
  await Promise.all(clients.map((c) => c.connected()));
  const pump = setInterval(() => clients.forEach((c) => c.pump(512)), 5).unref();
  for (let u = 0; u < 2; u++) {
    await new Promise((r) => setTimeout(r, 300));
    const r = await runNode(cliPath, ['update', ...flags, '--rundir', rundir, '--json']);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const rep = jsonLines(r.stdout)[0]!;
    assert.equal(rep.ok, true);
    check(rep.phases as Array<{ phase: string; ms: number; detail?: string }>);
  }
  clearInterval(pump);
  await Promise.all(clients.map((c) => c.settled()));
  for (const c of clients) {
    assert.equal(c.error, null);
    assert.equal(c.closed, false);
    assert.equal(c.received, c.sent);
  }
  const st = await runNode(cliPath, ['state', '--rundir', rundir, '--json']);
  assert.deepEqual(jsonLines(st.stdout)[0], { state: 'normal', value: 1 });
  clients.forEach((c) => c.sock.destroy());
}

test('luo update drives the whole update (prepare, reboot, updated, finish) while 50 connections stream', { timeout: 60_000 }, async () => {
  const { svc, port, rundir } = await startExample();
  try {
    await updateTwiceWhileStreaming(port, rundir, [], (phases) => {
      assert.deepEqual(phases.map((p) => p.phase), ['prepare', 'freeze + exec', 'next image up (updated)', 'finish', 'carried']);
      assert.match(phases[4]!.detail!, /^tcp 127\.0\.0\.1:\d+: 50 connections$/, 'the report counts what crossed');
    });
    const human = await runNode(cliPath, ['update', '--rundir', rundir]);
    assert.match(human.stdout, /✓ prepare\s+[\d.]+ ms\n✓ freeze \+ exec\s+[\d.]+ ms  pid \d+\n✓ next image up \(updated\)\s+[\d.]+ ms\n✓ finish\s+[\d.]+ ms  committed \(\d+ KiB of changed memory written back\)\n✓ carried\s+[\d.]+ ms  tcp 127\.0\.0\.1:\d+: 0 connections\nupdate done in [\d.]+ ms\n/);
  } finally {
    svc.kill('SIGKILL');
  }
});

test('luo update --successor: the agent finds the next image at once, while the previous one waits for FINISH; every byte once', { timeout: 60_000 }, async () => {
  const { svc, port, rundir } = await startExample();
  try {
    await updateTwiceWhileStreaming(port, rundir, ['--successor'], (phases) => {
      assert.deepEqual(phases.map((p) => p.phase), ['prepare', 'successor up, freeze + handover', 'next image up (updated)', 'finish', 'carried']);
      assert.match(phases[4]!.detail!, /^tcp 127\.0\.0\.1:\d+: 50 connections$/);
      // Not a speed check: the previous image waits up to 5 s for FINISH, and an agent it did
      // not hang up on (or whose reconnect it did not refuse) would wait that long.
      assert.ok(phases[2]!.ms < 4000, `the agent was held ${phases[2]!.ms} ms by the previous image`);
    });
  } finally {
    svc.kill('SIGKILL');
    for (const line of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
      // Successors are new processes: kill the example's images by their command line.
      try {
        if (fs.readFileSync(`/proc/${line}/cmdline`, 'utf8').includes(rundir)) process.kill(Number(line), 'SIGKILL');
      } catch { /* gone */ }
    }
  }
});

test('a next image that cannot be executed: the report says so, the update is cancelled and the old code keeps serving', { timeout: 30_000 }, async () => {
  const { svc, port, rundir } = await startExample();
  try {
    const r = await runNode(cliPath, ['update', '--rundir', rundir, '--', '/nonexistent/node', 'x.js']);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /✓ prepare/);
    assert.match(r.stdout, /✓ load next image .*\/nonexistent\/node x\.js/);
    assert.match(r.stdout, /✗ freeze \+ exec .*execve\(\/nonexistent\/node\) failed/);
    assert.match(r.stdout, /✓ cancelled .*the service serves the previous version/);
    assert.match(r.stderr, /^luo: update failed: ENOENT: .*cancelled: the previous version serves/);
    await assertStillServing(rundir, port);
  } finally {
    svc.kill('SIGKILL');
  }
});

test('--successor with a program that does not exist: ENOENT, cancelled, the old code keeps serving', { timeout: 30_000 }, async () => {
  const { svc, port, rundir } = await startExample();
  try {
    const r = await runNode(cliPath, ['update', '--successor', '--rundir', rundir, '--', '/nonexistent/node', 'x.js']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^luo: update failed: ENOENT/, 'refused at once, not after waiting for a successor (ETIMEDOUT)');
    await assertStillServing(rundir, port);
  } finally {
    svc.kill('SIGKILL');
  }
});

test('a next image that exits at start is rolled back: the previous image comes back in place, and the report says why at once (exit 1)', { timeout: 30_000 }, async () => {
  const { svc, port, rundir } = await startExample();
  try {
    const t0 = Date.now();
    const r = await runNode(cliPath, ['update', '--rundir', rundir, '--timeout', '20', '--json', '--', process.execPath, '-e', 'process.exit(3)']);
    assert.equal(r.code, 1, r.stderr + r.stdout);
    assert.ok(Date.now() - t0 < 15_000, 'known at once, not after the --timeout');
    const rep = jsonLines(r.stdout)[0]!;
    assert.equal(rep.ok, false);
    assert.equal(rep.code, 'ERR_UPDATE_FAILED');
    assert.match(rep.error as string, /the next version exited with status 3 before it finished its update; rolled back: the previous version serves \(pid \d+\)/);
    const phases = rep.phases as Array<{ phase: string; ok: boolean }>;
    assert.deepEqual(phases.map((p) => [p.phase, p.ok]), [['prepare', true], ['load next image', true], ['freeze + exec', true], ['next image up', false], ['rolled back', true]]);
    await assertStillServing(rundir, port);
  } finally {
    svc.kill('SIGKILL');
  }
});
