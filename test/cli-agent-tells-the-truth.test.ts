// The agent tells the truth, fast: a second agent during an update gets EBUSY naming the
// first; a state left PREPARED or UPDATED by an earlier update is named with the command that
// clears it; a PREPARE that fails is reported as failed, with nothing claimed about a cancel;
// `luo state` on a dead service says so and exits 4.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import test from 'node:test';
import { cliPath, imagePath, jsonLines, runNode } from './helpers.js';
import { startTxn, stopTxn } from './txn-harness.js';

const luo = (rundir: string, ...args: string[]) => runNode(cliPath, [...args, '--rundir', rundir]);

test('a second agent while an update is under way: EBUSY, naming the agent that drives it', { timeout: 60_000 }, async () => {
  const t = await startTxn([], { streaming: 2, idle: 1 });
  try {
    const first = spawn(process.execPath, [cliPath, 'update', '--successor', '--probation', '3s', '--rundir', t.rundir, '--json', '--', process.execPath, imagePath('txn-service')]);
    let out = '';
    first.stdout.on('data', (d) => (out += d));
    // While the first one holds the service (its successor on probation), every other agent
    // command is refused at once.
    await t.svc.next((l) => l.event === 'started' && l.pending === 'successor');
    for (const cmd of [['prepare'], ['update'], ['finish'], ['rollback']]) {
      const r = await luo(t.rundir, ...cmd);
      assert.equal(r.code, 1, `${cmd[0]}: ${r.stderr}`);
      assert.match(r.stderr, /^luo: (update failed: )?EBUSY: another agent is driving this service \(luo update, pid \d+\): one agent at a time\n$/, cmd[0]);
    }
    await new Promise((r) => first.on('close', r));
    assert.equal(jsonLines(out).at(-1)?.ok, true, out);
  } finally {
    stopTxn(t);
  }
});

test('a service left PREPARED, or UPDATED and never finished: the update names the state and the command that clears it', { timeout: 60_000 }, async () => {
  const t = await startTxn([], { streaming: 1, idle: 1 });
  try {
    assert.equal((await luo(t.rundir, 'prepare')).code, 0);
    const prepared = await luo(t.rundir, 'update');
    assert.equal(prepared.code, 1);
    assert.match(prepared.stderr, new RegExp(`the service is already PREPARED: an earlier update was neither finished nor cancelled\\. Run \`luo cancel --rundir ${t.rundir}\`, then update again`));
    assert.doesNotMatch(prepared.stderr, /SET_EVENT/);
    assert.equal((await luo(t.rundir, 'cancel')).code, 0);
    // A reboot alone leaves the next image UPDATED (nobody finishes it).
    assert.equal((await luo(t.rundir, 'prepare')).code, 0);
    assert.equal((await luo(t.rundir, 'reboot')).code, 0);
    await t.svc.next((l) => l.event === 'ready' && l.state === 'updated');
    let updated = await luo(t.rundir, 'update');
    for (let i = 0; i < 100 && /ERR_NO_SERVICE|ECONNREFUSED/.test(updated.stderr); i++) updated = await luo(t.rundir, 'update'); // its device is starting
    assert.equal(updated.code, 1, updated.stderr);
    assert.match(updated.stderr, new RegExp(`the service is UPDATED: its last update was never finished\\. Run \`luo finish --rundir ${t.rundir}\` to keep the version it runs now \\(or \`luo rollback --rundir ${t.rundir}\` to go back\\), then update again`));
  } finally {
    stopTxn(t);
  }
});

test('a PREPARE that fails: reported as failed, nothing claimed about a cancel, the service untouched', { timeout: 60_000 }, async () => {
  const t = await startTxn(['--fail-prepare'], { streaming: 1, idle: 1 });
  try {
    const r = await luo(t.rundir, 'update');
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^✗ prepare .*ENOSPC: .*txn: no room for the update/m);
    assert.doesNotMatch(r.stdout, /cancel/);
    assert.match(r.stderr, /^luo: update failed: ENOSPC: PREPARE failed \(.*txn: no room for the update\); nothing changed: the previous version serves\n$/);
    assert.equal((await luo(t.rundir, 'state')).stdout, 'normal\n');
  } finally {
    stopTxn(t);
  }
});

test('luo state on a dead service says it is not running, and exits 4', { timeout: 60_000 }, async () => {
  const t = await startTxn([], { streaming: 1, idle: 1 });
  stopTxn(t);
  while ((await luo(t.rundir, 'state')).code === 0) await new Promise((r) => setTimeout(r, 20));
  const r = await luo(t.rundir, 'state');
  assert.equal(r.code, 4);
  assert.match(r.stderr, /^luo: ERR_NO_SERVICE: the service is not running \(pid \d+ is gone\); its state file still says normal\n$/);
  const j = await luo(t.rundir, 'state', '--json');
  assert.equal(j.code, 4);
  assert.deepEqual(Object.keys(jsonLines(j.stdout)[0]!), ['state', 'value', 'running', 'pid', 'last']);
});
