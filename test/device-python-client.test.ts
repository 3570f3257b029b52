// A client written with Python's standard library alone (test/clients/luo_client.py, from
// docs/uapi.md) drives a full live update of the echo example: preserve a memfd, update,
// restore it, check its bytes, FINISH. On the way it disconnects in UPDATED: what it preserved
// in the new image is dropped, the handed-over memfd is not. The protocol needs nothing from
// luo's own code; and a TCP client of the echo service stays connected throughout.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import test, { after } from 'node:test';
import { distRoot, jsonLines, tmpDir } from './helpers.js';

const example = path.join(distRoot, 'examples', 'echo', 'main.js');
const client = path.join(distRoot, '..', 'test', 'clients', 'luo_client.py');
// Services this file starts: killed when the file ends, even after a timed-out test.
const started: ChildProcess[] = [];
after(() => started.forEach((c) => c.kill('SIGKILL')));

test('a Python stdlib client updates the echo example live and gets its memfd back intact', { timeout: 60_000 }, async () => {
  const rundir = tmpDir('luo-py-');
  const svc = spawn(process.execPath, [example, '--port', '0', '--rundir', rundir], { stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(svc);
  let out = '';
  svc.stdout.on('data', (d) => (out += d));
  try {
    while (!/listening on 127\.0\.0\.1:(\d+)/.test(out)) await new Promise((r) => setTimeout(r, 10));
    const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(out)![1]);
    await new Promise((r) => setTimeout(r, 200)); // the device starts right after listening
    const tcp = net.connect(port, '127.0.0.1');
    await new Promise((r) => tcp.once('connect', r));
    let echoed = '';
    tcp.on('data', (d) => (echoed += d));
    tcp.write('before ');

    const py = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const c = spawn('python3', [client, rundir, process.execPath, example, '--port', String(port), '--rundir', rundir]);
      let so = '';
      let se = '';
      c.stdout.on('data', (d) => (so += d));
      c.stderr.on('data', (d) => (se += d));
      c.on('close', (code) => resolve({ code, stdout: so, stderr: se }));
    });
    assert.equal(py.code, 0, py.stderr + py.stdout);
    const r = jsonLines(py.stdout)[0]!;
    assert.deepEqual(r, {
      preserve: 0, prepare: 0, load_image: 0, reboot: 0, closed_after_reboot: true, state_after: 4,
      preserve_in_updated: 0, dropped_on_disconnect: true, restore: 0, restored_fds: 1, bytes_intact: true, size: 1 << 20, restore_again: -22, finish: 0, state_final: 1,
    });
    tcp.write('after');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(echoed, 'before after', 'the TCP client stayed connected through the update');
    assert.match(out, /live update #1 .*1 connections carried over/);
    tcp.destroy();
  } finally {
    svc.kill('SIGKILL');
  }
});
