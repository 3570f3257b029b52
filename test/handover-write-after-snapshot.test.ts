// The last guard of the handover: if a frozen connection is closed (or read, or written into
// userspace) between its snapshot and execve, luo abandons the exec and cancels the update,
// instead of handing the next image a stale snapshot or a closed fd (a fatal boot).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import test from 'node:test';
import { imagePath, jsonLines, tmpDir } from './helpers.js';

test('a connection closed after its snapshot abandons the exec; the old image keeps running', { timeout: 30_000 }, async () => {
  const child = spawn(process.execPath, [imagePath('write-after-snapshot')], { env: { ...process.env, LUO_RUNDIR: tmpDir() }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  while (!out.includes('port')) await new Promise((r) => setTimeout(r, 10));
  const c = net.connect(jsonLines(out)[0]!.port as number, '127.0.0.1');
  let got = '';
  c.on('data', (d) => (got += d));
  await new Promise((r) => c.on('close', r));
  await new Promise((r) => child.on('close', r));
  const res = jsonLines(out)[1]!;
  // Two guards can stop it: kexec refuses to carry an fd that is no longer open (EBADF), and
  // verify() refuses a connection that changed since its snapshot (EBUSY). Here the closed fd
  // is caught first.
  assert.ok(['EBADF', 'EBUSY'].includes(res.code as string), JSON.stringify(res));
  assert.match(res.message as string, /registered for the next image is not open|changed after FREEZE/);
  assert.equal(res.state, 'normal', 'the update was cancelled; the old image kept running');
  assert.equal(got, 'hello');
});

test('a write that lands in userspace after the snapshot abandons the exec (EBUSY); every byte still arrives once', { timeout: 30_000 }, async () => {
  const child = spawn(process.execPath, [imagePath('write-after-snapshot')], { env: { ...process.env, LUO_RUNDIR: tmpDir(), MEDDLE: 'write' }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  while (!out.includes('port')) await new Promise((r) => setTimeout(r, 10));
  const c = net.connect(jsonLines(out)[0]!.port as number, '127.0.0.1');
  c.pause(); // back up the service until the update has been tried
  while (jsonLines(out).length < 2) await new Promise((r) => setTimeout(r, 20));
  const res = jsonLines(out)[1]!;
  assert.equal(res.code, 'EBUSY', JSON.stringify(res));
  assert.match(res.message as string, /changed after FREEZE.*was read, written or closed after its snapshot/);
  assert.equal(res.state, 'normal');
  let bytes = 0;
  let tail = '';
  c.on('data', (d: Buffer) => {
    bytes += d.length;
    tail = (tail + d.toString('latin1')).slice(-5);
  });
  c.resume();
  await new Promise((r) => c.on('end', r));
  assert.equal(bytes, 32 * 2 ** 20 + 5, 'every byte once');
  assert.equal(tail, 'late!', 'in order');
  child.kill();
});
