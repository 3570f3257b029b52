// An update's baseline, taken while the service serves right before the freeze, changes
// neither net.Socket's prototype (boot() hooked it) nor the shape (V8's hidden class) of the
// connections it watches (they had their properties from the start). Either change
// deoptimizes, under load, every compiled function of Node's HTTP path that relied on the old
// prototype or shape: the kv example at 10 000 connections answered in interpreted code
// through the baseline, the read ahead and the freeze.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import test from 'node:test';
import v8 from 'node:v8';
import { boot, preserveServer } from '../src/index.js';
import { Baseline } from '../src/handlers/connection.js';
import { tmpDir } from './helpers.js';

v8.setFlagsFromString('--allow-natives-syntax');
const sameShape = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean;

/** net.Socket.prototype's own properties and their values. */
function prototypeNow(proto: object): Map<string | symbol, unknown> {
  return new Map(Reflect.ownKeys(proto).map((k) => [k, Object.getOwnPropertyDescriptor(proto, k)!.value]));
}

test('a baseline changes neither net.Socket.prototype nor the shape of a connection it watches', async () => {
  const luo = boot({ name: 'shapes', rundir: tmpDir(), stateFile: false });
  const proto = net.Socket.prototype;
  const atBoot = prototypeNow(proto);

  const conns: net.Socket[] = [];
  let finished = 0;
  let allFinished: () => void = () => {};
  const done = new Promise<void>((r) => (allFinished = r));
  const server = http.createServer({ keepAliveTimeout: 60_000 }, (_req, res) => {
    // Node's own 'finish' listener (it makes the connection idle) runs before this one.
    res.on('finish', () => void (++finished === 2 && setImmediate(allFinished)));
    res.end('ok');
  });
  server.on('connection', (s: net.Socket) => conns.push(s));
  server.listen(0, '127.0.0.1');
  await preserveServer(luo, 1, server);
  const port = (server.address() as net.AddressInfo).port;

  // Two keep-alive connections, each answered once and idle since.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  const get = (): Promise<void> => new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => res.resume().on('end', resolve)).on('error', reject);
  });
  await Promise.all([get(), get()]);
  await done;
  assert.equal(conns.length, 2);
  const [watched, other] = conns as [net.Socket, net.Socket];
  assert.ok(sameShape(watched, other), 'two connections of one server start with one shape');

  const base = await Baseline.take([watched], { http: true });
  try {
    assert.equal(base.count, 1, 'the idle connection is in the baseline');
    assert.ok(sameShape(watched, other), 'the connection the baseline watches has the shape of one it does not');
    assert.deepEqual(prototypeNow(proto), atBoot, 'net.Socket.prototype is as boot() left it');
  } finally {
    base.drop();
    agent.destroy();
    server.close();
  }
});
