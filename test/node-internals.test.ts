// The Node internals luo relies on (src/handlers/node-internals.ts), checked on real sockets.
// If one of these fails after a Node upgrade, the adapter needs updating before luo can be
// trusted with connections on that version.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import test from 'node:test';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import vm from 'node:vm';
import {
  attachToServer, collectGarbage, collectYoung, fdOf, firstChanged, handleOf, hasDecoder, httpBusy, isIdle, isReading, NO_FIRST_READ, QuietWatch, readBuffered, READ_ENDED, resumeReading,
  scanSockets, stopAll, stopReading, trackWrites, udpHandleOf, unsentBytes, unwatchQuiet, watchQuiet, WRITE_ENDED,
} from '../src/handlers/node-internals.js';
import * as sys from '../src/sys/index.js';

async function pair(): Promise<{ server: net.Server; a: net.Socket; b: net.Socket }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const bP = new Promise<net.Socket>((r) => server.once('connection', r));
  const a = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((r) => a.once('connect', r));
  return { server, a, b: await bP };
}
const tick = (ms = 50): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('handle and fd: _handle exists with a real kernel fd, on sockets and listening servers', async () => {
  const { server, a, b } = await pair();
  assert.equal(typeof handleOf(b).readStop, 'function');
  assert.equal(typeof handleOf(b).readStart, 'function');
  assert.equal(typeof handleOf(b).writeQueueSize, 'number');
  assert.match(sys.fdTarget(fdOf(b)), /^socket:\[\d+\]$/);
  assert.match(sys.fdTarget(fdOf(server)), /^socket:\[\d+\]$/);
  a.destroy();
  b.destroy();
  server.close();
});

test('stopReading stops libuv (no data reaches userspace), keeps Node\'s flag true to it, and resumeReading resumes', async () => {
  const { server, a, b } = await pair();
  let got = 0;
  b.on('data', (d) => (got += d.length));
  a.write('x'.repeat(100));
  await tick();
  assert.equal(got, 100);
  stopReading(b);
  assert.equal(isReading(b), false);
  a.write('y'.repeat(1000));
  await tick(100);
  assert.equal(got, 100, 'nothing read while stopped');
  assert.equal(b.readableLength, 0, 'nothing went into the stream buffer either');
  resumeReading(b);
  assert.equal(isReading(b), true);
  await tick();
  assert.equal(got, 1100, 'reading resumes, and Node kept reading afterwards');
  b.pause();
  b.resume(); // Node's own resume path must still work
  a.write('z');
  await tick();
  assert.equal(got, 1101);
  a.destroy();
  b.destroy();
  server.close();
});

test('readBuffered copies exactly the bytes read and not consumed, without consuming them', async () => {
  const { server, a, b } = await pair();
  b.pause();
  a.write('first ');
  await tick();
  a.write('second');
  await tick();
  stopReading(b);
  assert.equal(readBuffered(b).toString(), 'first second');
  assert.equal(b.readableLength, 12, 'still there');
  const chunks: string[] = [];
  b.on('data', (d) => chunks.push(d.toString()));
  b.resume();
  await tick();
  assert.equal(chunks.join(''), 'first second');
  b.setEncoding('utf8');
  assert.equal(hasDecoder(b), true);
  a.destroy();
  b.destroy();
  server.close();
});

test('trackWrites + unsentBytes: the unsent tail of the in-flight write plus Node\'s buffered writes, exactly', async () => {
  const { server, a, b } = await pair();
  a.pause();
  stopReading(a); // a never reads: b's writes back up
  trackWrites(b);
  const total = 32 * 2 ** 20;
  const data = Buffer.alloc(total);
  for (let i = 0; i < total; i++) data[i] = (i * 7) & 255;
  for (let off = 0; off < total; off += 2 ** 20) b.write(data.subarray(off, off + 2 ** 20));
  await tick(300);
  const unsent = unsentBytes(b);
  assert.ok(unsent.length > 0 && unsent.length < total, `${unsent.length} unsent`);
  // writableLength also counts the part of the in-flight write already in the kernel (its
  // callback has not run yet), so it can only be larger.
  assert.ok(unsent.length <= b.writableLength);
  assert.ok(b.writableLength - unsent.length < 2 ** 20, 'at most one write (1 MiB) is in flight');
  assert.ok(data.subarray(total - unsent.length).equals(unsent), 'the unsent bytes are exactly the tail of what was written');
  a.destroy();
  b.destroy();
  server.close();
});

test('http: a connection with a response in progress is busy; attachToServer counts a connection', async () => {
  let release: () => void = () => {};
  const server = http.createServer((_req, res) => {
    release = () => res.end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const sockP = new Promise<net.Socket>((r) => server.once('connection', r));
  const req = http.get({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' });
  req.on('error', () => {});
  const s = await sockP;
  await tick(100);
  assert.equal(httpBusy(s), true);
  release();
  await tick(100);
  assert.equal(httpBusy(s), false);
  const extra = new net.Socket();
  const before = (server as unknown as { _connections: number })._connections;
  attachToServer(server, extra);
  assert.equal((server as unknown as { _connections: number })._connections, before + 1);
  assert.equal((extra as unknown as { server: net.Server }).server, server);
  req.destroy();
  server.closeAllConnections();
  server.close();
});

test('dgram: the handle behind the internal state symbol has an fd, recvStop and recvStart', async () => {
  const u = dgram.createSocket('udp4');
  await new Promise<void>((r) => u.bind(0, '127.0.0.1', r));
  const h = udpHandleOf(u);
  assert.match(sys.fdTarget(h.fd), /^socket:/);
  assert.equal(typeof h.recvStop, 'function');
  assert.equal(typeof h.recvStart, 'function');
  u.close();
});

test('stream state: the freeze\'s passes read buffered lengths, end flags and the fd cached on the handle', async () => {
  const { server, a, b } = await pair();
  trackWrites(b); // caches the fd on the handle
  stopReading(b);
  a.write('abc');
  await tick();
  let scan = scanSockets([b], false);
  assert.deepEqual(scan.fds, [fdOf(b)]);
  assert.equal(scan.handles[0], handleOf(b));
  assert.deepEqual(scan.busy, [], 'nothing read (reading stopped): idle');
  resumeReading(b);
  b.pause();
  await tick();
  scan = scanSockets([b], true);
  assert.deepEqual(scan.busy, [0], 'bytes read and not consumed: busy');
  assert.equal(isReading(b), false, 'scanSockets(…, true) stopped reading');
  assert.equal(firstChanged(scan, new Uint8Array([1])), -1);
  assert.equal(firstChanged(scan, null), 0, 'a busy socket is not idle');
  b.read(); // consume
  assert.equal(firstChanged(scan, null), -1, 'idle again, same handle, not reading');
  resumeReading(b);
  assert.equal(firstChanged(scan, null), 0, 'reading again: changed');
  stopReading(b);
  assert.deepEqual(stopAll([b]), [], 'nothing pending');
  b.destroy();
  assert.equal(scanSockets([b], false).sockets.length, 0, 'a destroyed socket is skipped');
  assert.equal(firstChanged(scan, null), 0, 'destroyed: its handle is gone');
  a.destroy();
  server.close();
});

test('stream state: end flags, each side on its own (half-open connections)', async () => {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const open = async (): Promise<[net.Socket, net.Socket]> => {
    const bP = new Promise<net.Socket>((r) => server.once('connection', r));
    const a = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
    return [a, await bP];
  };
  const [a1, b1] = await open();
  b1.end(); // this side ended its writes
  await tick();
  assert.equal(scanSockets([b1], false).flags[0], WRITE_ENDED);
  const [a2, b2] = await open();
  b2.resume();
  const ended = new Promise((r) => b2.once('end', r));
  a2.end(); // the peer ended: this side has read to the end
  await ended;
  assert.equal(scanSockets([b2], false).flags[0], READ_ENDED);
  for (const s of [a1, b1, a2, b2]) s.destroy();
  server.close();
});

test('collectGarbage: a full collection on demand, without --expose-gc, and gc stays hidden', async () => {
  let target: object | null = { big: new Array(1000).fill(1) };
  const ref = new WeakRef(target);
  target = null;
  await tick(10); // a WeakRef keeps its target alive until the end of the job that made it
  assert.equal(collectGarbage(), true);
  assert.equal(ref.deref(), undefined, 'the unreachable object was collected');
  assert.equal(vm.runInNewContext('typeof gc'), 'undefined', 'gc is not exposed to other code');
  assert.equal(collectGarbage(), true, 'again');
});

test('collectYoung: gc({type: "minor"}) runs a scavenge, not a full collection', async () => {
  const kinds: number[] = [];
  const obs = new PerformanceObserver((l) => {
    for (const e of l.getEntries()) kinds.push((e as unknown as { detail: { kind: number } }).detail.kind);
  });
  obs.observe({ entryTypes: ['gc'] });
  try {
    assert.equal(collectYoung(), true);
    await tick(20); // gc entries are delivered on a later turn
  } finally {
    obs.disconnect();
  }
  assert.ok(kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR), `a minor collection was seen (kinds: ${kinds.join(',')})`);
  assert.ok(!kinds.includes(constants.NODE_PERFORMANCE_GC_MAJOR), 'and no full one');
});

test('watchQuiet: an idle connection is marked moved, once, by data arriving, a write, an end or a destroy; not while it stays idle', async () => {
  const pairs = await Promise.all([pair(), pair(), pair(), pair(), pair()]);
  const w = new QuietWatch(pairs.length);
  pairs.forEach((p, i) => {
    p.b.on('data', () => {});
    assert.equal(isIdle(p.b), true);
    assert.equal(watchQuiet(p.b, w, i), true);
  });
  const moves: net.Socket[] = [];
  w.onMove = (s) => moves.push(s);
  await tick();
  assert.deepEqual(w.movedList, [], 'nothing moved while idle');
  pairs[0]!.a.write('x'); // data arriving: push
  await tick();
  pairs[1]!.b.write('y');
  pairs[2]!.b.end();
  pairs[3]!.b.destroy();
  pairs[1]!.b.write('again');
  assert.deepEqual(w.movedList, [0, 1, 2, 3]);
  assert.deepEqual([...w.moved], [1, 1, 1, 1, 0]);
  assert.equal(moves.length, 4, 'onMove once per connection');
  unwatchQuiet(pairs[4]!.b);
  pairs[4]!.b.write('z');
  assert.deepEqual(w.movedList, [0, 1, 2, 3], 'an unwatched one does not count');
  for (const p of pairs) {
    p.a.destroy();
    p.b.destroy();
    p.server.close();
  }
});

test('watchQuiet: an HTTP keep-alive connection moves when its parser consumes the next request (the parser reads in C++, not through push)', async () => {
  const server = http.createServer({ keepAliveTimeout: 10_000 }, (_req, res) => res.end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const port = (server.address() as net.AddressInfo).port;
  let conn: net.Socket | null = null;
  server.on('connection', (s) => (conn = s));
  const get = (): Promise<void> => new Promise((r) => http.get({ port, host: '127.0.0.1', agent }, (res) => res.resume().on('end', () => r())));
  await get();
  await tick();
  const s = conn!;
  assert.equal(isIdle(s), true, 'between requests it is idle');
  const w = new QuietWatch(1);
  assert.equal(watchQuiet(s, w, 0), true, 'its parser has the kOnExecute callback');
  await tick();
  assert.deepEqual(w.movedList, []);
  await get();
  assert.deepEqual(w.movedList, [0], 'the second request moved it');
  agent.destroy();
  server.close();
});

test('a socket built on an fd with manualStart reads nothing until read(0) (prebuilt sockets of a successor)', async () => {
  const { server, a, b } = await pair();
  stopReading(b); // the copy below is the only reader
  const fd = sys.dup(fdOf(b));
  const s = new net.Socket({ fd, readable: true, writable: true, ...NO_FIRST_READ });
  a.write('hello');
  await tick();
  assert.equal(s.readableLength, 0, 'not read yet');
  let got = '';
  s.on('data', (d) => (got += d.toString()));
  s.read(0);
  await tick();
  assert.equal(got, 'hello');
  s.destroy();
  a.destroy();
  b.destroy();
  server.close();
});
