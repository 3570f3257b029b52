// restoreServer adopts the busy connections (input waiting at the handover) in batches that
// double, serving each batch before the next; the batches stop growing at 64, so that one
// adopted early is served again after at most 64 more adoptions, not after hundreds (a slow
// pause under load piled up 1 500 of them, and batches of 512 and 1 024 held the busiest
// clients' next requests for 150 ms). Here 300 connections stream through an update to a
// successor, which waits 300 ms before it restores (ECHO_RESTORE_DELAY_MS), so that every one
// has input waiting and is busy (how many were, left to the timing of the pumps and the
// pause, was 123 on one run); the new image never adopts more than 64 between two reads
// (each batch's connections have input, read in the poll after it); every byte comes back
// exactly once.
import assert from 'node:assert/strict';
import test from 'node:test';
import { assertEveryByteOnce, connectClients, Service } from './echo-harness.js';
import { tmpDir } from './helpers.js';

test('busy connections are adopted in batches of at most 64, each served before the next', { timeout: 90_000 }, async () => {
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', ECHO_RESTORE_DELAY_MS: '300', LUO_TRACE: '1' });
  try {
    const port = await svc.start();
    const clients = await connectClients(port, 300);
    const pumper = setInterval(() => clients.forEach((c) => c.pump(32)), 1).unref();
    await new Promise((r) => setTimeout(r, 200));
    const from = svc.stderr.length;
    const r = await svc.update();
    assert.equal(r.event, 'ready', `${JSON.stringify(r)}; stderr: ${svc.stderr.slice(-2000)}`);
    clearInterval(pumper);
    const busy = Number(/restoreServer: 300 connections, (\d+) busy first/.exec(svc.stderr.slice(from))?.[1]);
    assert.ok(busy > 256, `${busy} of 300 connections had input at the restore: too few to tell batches of 64 from doubling ones`);
    assert.ok((r.maxAdoptedBetweenReads as number) <= 64, `${r.maxAdoptedBetweenReads as number} connections adopted between two reads (${busy} busy)`);
    await assertEveryByteOnce(clients, 64);
  } finally {
    svc.stop();
  }
});
