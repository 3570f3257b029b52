// The key-value example across a CANCEL that comes before any FREEZE (`luo prepare` then `luo
// cancel`, as a successor failing at spawn does): the raw echo stream and the WebSocket
// sessions carry on with every byte once (kv-sessions' cancel must resume only what a freeze
// stopped: re-adding a listener no freeze removed echoed every byte twice).
import assert from 'node:assert/strict';
import test from 'node:test';
import { EchoClient, WsClient, type Client } from '../examples/kv/clients.js';
import { agent } from '../examples/kv/demo.js';
import { startKv } from './kv-harness.js';

test('prepare then cancel: every echoed byte and every WebSocket message once', { timeout: 60_000 }, async () => {
  const kv = await startKv();
  const clients: Client[] = [new EchoClient(kv.port), new WsClient(kv.port)];
  await Promise.all(clients.map((c) => c.start()));
  await new Promise((r) => setTimeout(r, 200));
  for (let i = 0; i < 2; i++) {
    assert.equal((await agent(['prepare', '--rundir', kv.rundir])).code, 0);
    assert.equal((await agent(['cancel', '--rundir', kv.rundir])).code, 0);
    await new Promise((r) => setTimeout(r, 200));
  }
  await Promise.all(clients.map((c) => c.stop()));
  for (const c of clients) {
    assert.deepEqual([c.counts.lost, c.counts.repeated, c.counts.mismatches, c.counts.dropped, c.counts.failed], [0, 0, 0, 0, 0], c.constructor.name);
  }
  assert.ok((clients[0] as EchoClient).received > 0);
});
