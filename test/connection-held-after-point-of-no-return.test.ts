// After the point of no return a previous image must not touch a connection its successor now
// owns: a write (an application timer, a heartbeat), an end() or a resume() from it reaches
// neither the kernel nor the peer. If the update does not commit, what was held goes out, in
// order, and reading resumes.
import assert from 'node:assert/strict';
import net from 'node:net';
import test from 'node:test';
import { bytesWrittenToKernel, endHold, isReading, markHold, newHoldEpoch, outputHeld, resumeReading, startHold, stopReading } from '../src/handlers/node-internals.js';

async function pair(): Promise<{ a: net.Socket; b: net.Socket; server: net.Server }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const got = new Promise<net.Socket>((r) => server.once('connection', r));
  const a = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((r) => a.once('connect', r));
  return { a, b: await got, server };
}

test('held: writes, end and resume wait; released: they go out in order', async () => {
  const { a, b, server } = await pair();
  const other = await pair();
  const epoch = newHoldEpoch();
  markHold(a, epoch);
  let got = '';
  b.on('data', (d) => (got += d));
  const ended = new Promise<void>((r) => b.once('end', () => r()));

  await new Promise<void>((r) => a.write('before.', () => r()));
  const sent = bytesWrittenToKernel(a);
  assert.equal(sent, 7);

  startHold(epoch);
  assert.equal(outputHeld(a), true);
  assert.equal(outputHeld(other.a), false, 'only the marked sockets are held');
  let called = false;
  a.write('held-1.', () => (called = true));
  a.write('held-2.');
  a.end('bye');
  assert.equal(bytesWrittenToKernel(a), sent, 'nothing reached the kernel');
  stopReading(a);
  a.resume();
  assert.equal(isReading(a), false, 'a resume does not start reading');
  // A socket that is not held carries on meanwhile (and proves the loop turned).
  const echoed = new Promise<string>((r) => other.b.once('data', (d) => r(String(d))));
  other.a.write('free');
  assert.equal(await echoed, 'free');
  assert.equal(called, false);
  assert.equal(got, 'before.');

  endHold(epoch);
  await ended;
  assert.equal(got, 'before.held-1.held-2.bye', 'released in order, end last');
  assert.equal(called, true);
  resumeReading(a);
  for (const s of [a, b, other.a, other.b]) s.destroy();
  server.close();
  other.server.close();
});
