// An update of the key-value example that fails at exec (the next image does not exist): the
// WebSocket sessions, the echo stream and the HTTP clients carry on in the old image with
// nothing lost (kv-sessions' CANCEL resumes consumption where FREEZE stopped it); a later
// update succeeds.
import assert from 'node:assert/strict';
import test from 'node:test';
import { EchoClient, HttpClient, WsClient, type Client } from '../examples/kv/clients.js';
import { agent } from '../examples/kv/demo.js';
import { startKv, updateKv } from './kv-harness.js';

test('a failed update leaves every session running in the old image, nothing lost; the next update works', { timeout: 90_000 }, async () => {
  const kv = await startKv();
  const clients: Client[] = [new WsClient(kv.port), new WsClient(kv.port), new EchoClient(kv.port), new HttpClient(kv.port, 0)];
  await Promise.all(clients.map((c) => c.start()));
  await new Promise((r) => setTimeout(r, 300));
  const bad = await updateKv(kv, 2, ['/nonexistent/node', 'x.js']);
  assert.equal(bad.code, 1);
  assert.match(String(bad.report.error), /ENOENT/);
  const st = await agent(['state', '--rundir', kv.rundir]);
  assert.equal(st.out, 'normal\n');
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(clients.every((c) => c.lastVersion === 'v1'));
  const good = await updateKv(kv, 2);
  assert.equal(good.code, 0, JSON.stringify(good.report));
  await kv.svc.wait((l) => l.event === 'ready' && l.version === 'v2', 30_000, 'v2');
  await new Promise((r) => setTimeout(r, 300));
  await Promise.all(clients.map((c) => c.stop()));
  for (const c of clients) {
    if (!(c instanceof EchoClient)) assert.equal(c.lastVersion, 'v2'); // the echo stream names its version only at the upgrade
    assert.deepEqual([c.counts.lost, c.counts.repeated, c.counts.mismatches, c.counts.dropped, c.counts.failed], [0, 0, 0, 0, 0], c.constructor.name);
  }
  assert.ok((clients[2] as EchoClient).received > 0);
});
