// A client that never reads: the service's writes to it cannot drain. With onUndrained 'carry'
// the update carries the unsent (and the unread) bytes; with 'fail' the update fails cleanly
// and the old image keeps serving. Either way, once the client reads, every byte arrives
// exactly once and in order.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Service, StreamClient, pattern } from './echo-harness.js';
import { tmpDir } from './helpers.js';

async function stuckClient(port: number): Promise<StreamClient> {
  const c = new StreamClient(7, port);
  await c.connected();
  c.sock.pause(); // never reads: the echo backs up into the service
  // Keep writing until the kernel buffers on both sides are full and our own writes back up
  // (loopback buffers autotune to several MiB), at most 64 MiB.
  while (c.sent < 64 * 2 ** 20) {
    c.sock.write(pattern(7, c.sent, 2 ** 20));
    c.sent += 2 ** 20;
    await new Promise((r) => setTimeout(r, 30));
    if (c.sock.writableLength > 2 * 2 ** 20) break;
  }
  await new Promise((r) => setTimeout(r, 300));
  return c;
}

for (const policy of ['carry', 'fail'] as const) {
  test(`a reader that never drains: onUndrained '${policy}' ${policy === 'carry' ? 'carries the unsent bytes' : 'fails the update cleanly'}, nothing lost`, { timeout: 60_000 }, async () => {
    const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_DRAIN_MS: '300', ECHO_ON_UNDRAINED: policy });
    try {
      const port = await svc.start();
      const normal = new StreamClient(1, port);
      await normal.connected();
      const stuck = await stuckClient(port);
      assert.ok(stuck.sock.writableLength > 0, 'the client could not send everything: the service is backed up');
      normal.pump(4096);
      const r = await svc.update();
      if (policy === 'carry') {
        assert.equal(r.event, 'ready', JSON.stringify(r));
        assert.ok((r.unsent as number) > 0, `unsent bytes were carried: ${JSON.stringify(r)}`);
        assert.ok((r.unread as number) > 0, `bytes read but not consumed were carried: ${JSON.stringify(r)}`);
      } else {
        assert.equal(r.event, 'update-failed');
        assert.equal(r.code, 'ETIMEDOUT');
        assert.match(r.message as string, /unsent bytes after 300 ms \(onUndrained: 'fail'\)/);
        assert.equal(r.state, 'normal', 'the old image keeps serving');
      }
      normal.pump(4096);
      stuck.sock.resume(); // now read everything
      await stuck.settled(30_000);
      await normal.settled();
      assert.equal(stuck.error, null);
      assert.equal(stuck.received, stuck.sent);
      assert.equal(normal.error, null);
      assert.equal(normal.received, 8192);
      if (policy === 'fail') {
        const again = await svc.update(); // nothing stuck now: the update goes through
        assert.equal(again.event, 'ready', JSON.stringify(again));
      }
      stuck.sock.destroy();
      normal.sock.destroy();
    } finally {
      svc.stop();
    }
  });
}
