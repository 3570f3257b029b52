// The luo agent's commands against a running service: state (and --watch), prepare/cancel,
// preserve (held until interrupted, as the device drops an agent's files when it leaves),
// fd-state, fd-event, dump, and their one-line errors and exit codes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { cliPath, jsonLines, runNode, startDeviceService, tmpDir, type DeviceService } from './helpers.js';

let svc: DeviceService;
let rundir = '';
before(async () => {
  rundir = tmpDir('luo-agent-');
  svc = await startDeviceService({ LUO_RUNDIR: rundir, LUO_KHO_DEBUG: '1' });
});
after(() => svc.child.kill('SIGKILL'));
const luo = (...args: string[]) => runNode(cliPath, [...args, '--rundir', rundir]);

test('state, and state --watch printing every change; prepare and cancel', async () => {
  assert.equal((await luo('state')).stdout, 'normal\n');
  const watch = spawn(process.execPath, [cliPath, 'state', '--watch', '--json', '--rundir', rundir]);
  let seen = '';
  watch.stdout.on('data', (d) => (seen += d));
  await new Promise((r) => setTimeout(r, 200));
  const p = await luo('prepare');
  assert.equal(p.code, 0, p.stderr);
  assert.equal(p.stdout, 'prepare: ok (state prepared)\n');
  await new Promise((r) => setTimeout(r, 150));
  assert.equal((await luo('cancel', '--json')).stdout, '{"event":"cancel","ok":true,"state":"normal"}\n');
  await new Promise((r) => setTimeout(r, 200));
  watch.kill();
  assert.deepEqual(jsonLines(seen).map((l) => l.state), ['normal', 'prepared', 'normal']);
});

test('an error is one line naming the errno and the cause, with exit code 1', async () => {
  const r = await luo('finish');
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'luo: EINVAL: the service answered EINVAL to SET_EVENT\n');
});

test('preserve holds the device until interrupted; the service then drops the token (v3 close semantics)', async () => {
  const file = path.join(rundir, '..', `${path.basename(rundir)}-data`);
  fs.writeFileSync(file, 'x');
  const p = spawn(process.execPath, [cliPath, 'preserve', '9', file, '--rundir', rundir]);
  after(() => p.kill('SIGKILL')); // never let a held device leak into the next tests
  let so = '';
  p.stdout.on('data', (d) => (so += d));
  while (!so.includes('preserved')) await new Promise((r) => setTimeout(r, 10));
  assert.match(so, /preserved .* as token 9; holding the device/);
  const busy = await luo('fd-state', '9');
  assert.equal(busy.code, 1);
  assert.match(busy.stderr, /^luo: EBUSY: another agent is driving this service \(luo preserve, pid \d+\): one agent at a time\n$/);
  const report = (): Promise<Record<string, any>> => svc.report();
  assert.deepEqual((await report()).tokens, ['9']);
  p.kill('SIGINT');
  await new Promise((r) => p.on('close', r));
  // The service drops the token when it sees the hangup: poll for it (a loaded machine is slow).
  let tokens: string[] = ['9'];
  for (let i = 0; i < 100 && tokens.length; i++) {
    await new Promise((r) => setTimeout(r, 50));
    tokens = (await report()).tokens;
  }
  assert.deepEqual(tokens, []);
});

test('fd-state and fd-event on an unknown token: ENOENT; unknown event name: EINVAL before connecting', async () => {
  const r = await luo('fd-state', '77');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^luo: ENOENT: /);
  const e = await luo('fd-event', '77', 'explode');
  assert.equal(e.code, 1);
  assert.match(e.stderr, /unknown event "explode"/);
});

test('dump shows the debug view (LUO_KHO_DEBUG=1) after a prepare', async () => {
  await luo('prepare');
  const d = await luo('dump');
  await luo('cancel');
  assert.equal(d.code, 0, d.stderr);
  assert.match(d.stdout, /\/\/ out: .*debug\/out\/fdt\n\/dts-v1\/;/);
  assert.match(d.stdout, /compatible = "luo-v1";/);
});

test('no service at the runtime directory: exit 4 with one line', async () => {
  const r = await runNode(cliPath, ['prepare', '--rundir', tmpDir('luo-none-')]);
  assert.equal(r.code, 4);
  assert.match(r.stderr, /^luo: .*cannot connect to .*liveupdate: no service is listening there/);
  assert.equal(r.stderr.split('\n').length, 2);
});
