// Single connections (socket-v2), listeners (listener-v2) and UDP (udp-v1) across a live
// update; TLS refused at preserve time with the reason.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import test from 'node:test';
import { imagePath, tmpDir } from './helpers.js';

test('a connection keeps its peer and its bytes, a listener accepts what arrived during the pause, UDP datagrams wait; TLS is refused', { timeout: 30_000 }, async (t) => {
  const peer = net.createServer();
  await new Promise<void>((r) => peer.listen(0, '127.0.0.1', r));
  const peerSide = new Promise<net.Socket>((r) => peer.once('connection', r));
  const child = spawn(process.execPath, [imagePath('sockets-probe')], { env: { ...process.env, PEER_PORT: String((peer.address() as net.AddressInfo).port), LUO_RUNDIR: tmpDir() }, stdio: ['ignore', 'pipe', 'pipe'] });
  // A failed assertion must not leave the service running: the file would never exit.
  t.after(() => {
    child.kill('SIGKILL');
    peer.close();
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const lines: Array<Record<string, any>> = [];
  const gotLine = (n: number): Promise<Record<string, any>> =>
    new Promise((resolve, reject) => {
      const t = setInterval(() => {
        if (lines.length >= n) {
          clearInterval(t);
          resolve(lines[n - 1]!);
        }
      }, 5);
      child.on('exit', () => setTimeout(() => (lines.length >= n ? resolve(lines[n - 1]!) : reject(new Error(`exited: ${out} ${err}`))), 50));
    });
  child.stdout.on('data', (d) => {
    out += d;
    lines.splice(0, lines.length, ...out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)));
  });

  const g1 = await gotLine(1);
  assert.match(g1.refusedServer, /^EOPNOTSUPP: TLS connections cannot be handed over: the session keys live in this process's memory/);
  assert.match(g1.refusedSocket, /^EOPNOTSUPP: TLS/);
  assert.match(g1.refusedHttps, /^EOPNOTSUPP: TLS connections cannot be handed over/, 'preserveServer refuses a TLS server too');
  assert.deepEqual(g1.kinds, ['listener-v2', 'socket-v2', 'udp-v1']);
  const ps = await peerSide;
  let fromService = '';
  ps.on('data', (d) => (fromService += d));
  // While the service updates: bytes on the connection, a datagram, a new connection.
  ps.write('during-update');
  const u = dgram.createSocket('udp4');
  t.after(() => u.close());
  let sentDatagrams = 0;
  // 50 a second: the kernel's receive buffer holds a few hundred, so a pause of several
  // seconds on a loaded machine still loses none (at 200 a second, one of 3.6 s lost some).
  const sender = setInterval(() => u.send(`d${++sentDatagrams}`, g1.udpPort, '127.0.0.1'), 20).unref();
  const last1 = await gotLine(2);
  // Image 1 is exec'ing: a connection made now waits in the listener's backlog.
  const late = net.connect(g1.listenPort, '127.0.0.1');
  let lateGot = '';
  late.on('data', (d) => (lateGot += d));
  const lateClosed = new Promise((r) => late.on('close', r));
  const g2 = await gotLine(3);
  clearInterval(sender);
  await lateClosed;
  assert.equal(g2.onConn, 'during-update', 'bytes sent during the update arrive once, in the new image');
  assert.equal(g2.localPort, g1.localPort, 'same connection');
  assert.equal(g2.remotePort, (peer.address() as net.AddressInfo).port, 'same peer');
  assert.equal(fromService, 'hello-1hello-2', 'the peer sees one connection carrying both images\' bytes');
  // Every datagram sent until the new image reported arrived exactly once, in one image or the
  // other; those sent during the pause waited in the kernel for the new image.
  const all = [...last1.datagrams, ...g2.datagrams] as string[];
  assert.equal(new Set(all).size, all.length, 'no datagram twice');
  assert.ok(g2.datagrams.length > 0, 'the new image received datagrams');
  const n = Math.max(...all.map((d) => Number(d.slice(1))));
  assert.deepEqual(all.map((d) => Number(d.slice(1))), Array.from({ length: n }, (_, i) => i + 1), 'none lost, in order');
  assert.equal(g2.udpPort, g1.udpPort);
  assert.equal(g2.listenPort, g1.listenPort);
  assert.equal(lateGot, 'hi from gen 2', 'a connection made during the pause waited in the backlog and was served');
  ps.destroy();
});
