// WebSocket clients across two live updates of the key-value example: every message is
// acknowledged exactly once, in order, by the same session (its count carries on), and the
// acknowledgements switch to the new version. Messages are sent as two frames written apart,
// so updates also land between the frames of a message.
import assert from 'node:assert/strict';
import test from 'node:test';
import { WsClient } from '../examples/kv/clients.js';
import { startKv, updateKv } from './kv-harness.js';

test('WebSocket messages across two updates: each acknowledged exactly once, sessions kept', { timeout: 90_000 }, async () => {
  const kv = await startKv();
  const clients = Array.from({ length: 6 }, () => new WsClient(kv.port));
  await Promise.all(clients.map((c) => c.start()));
  const seenAt: string[][] = [];
  for (const to of [2, 1] as const) {
    await new Promise((r) => setTimeout(r, 300));
    const u = await updateKv(kv, to);
    assert.equal(u.code, 0, JSON.stringify(u.report));
    await kv.svc.wait((l) => l.event === 'ready' && l.version === `v${to}` && l.updated === true, 30_000, `v${to}`);
    await new Promise((r) => setTimeout(r, 300));
    seenAt.push(clients.map((c) => c.lastVersion));
  }
  await Promise.all(clients.map((c) => c.stop()));
  assert.deepEqual(seenAt, [Array(6).fill('v2'), Array(6).fill('v1')]);
  for (const c of clients) {
    assert.ok(c.acked > 20, `messages flowed (${c.acked})`);
    assert.equal(c.counts.requests, c.acked, 'every message sent was acknowledged');
    assert.deepEqual([c.counts.lost, c.counts.repeated, c.counts.mismatches, c.counts.dropped, c.counts.failed], [0, 0, 0, 0, 0]);
    assert.ok((c.counts.versions.get('v1') ?? 0) > 0 && (c.counts.versions.get('v2') ?? 0) > 0);
  }
});
