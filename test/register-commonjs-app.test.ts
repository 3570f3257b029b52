// A CommonJS app (require, no ESM anywhere in it) under `node --import luo/register`: its
// server is carried across an update in place and one to a successor, a keep-alive connection
// opened before both is answered by each version in turn.
import assert from 'node:assert/strict';
import http from 'node:http';
import test from 'node:test';
import { DropIn } from './dropin-harness.js';

test('a CommonJS app is carried by drop-in mode', { timeout: 90_000 }, async () => {
  const svc = await DropIn.start('cjs-app.cjs', ['v1']);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const get = (): Promise<{ v: string }> => new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: svc.port, path: '/x', agent }, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve(JSON.parse(b) as { v: string }));
    }).on('error', reject);
  });
  try {
    assert.equal((await get()).v, 'v1');
    const local = [...Object.values(agent.freeSockets)].flat()[0]!.localPort;
    let r = await svc.update({ args: ['v2'] });
    assert.equal(r.code, 0, r.stdout + r.stderr + svc.stderr);
    assert.equal((await get()).v, 'v2');
    r = await svc.update({ args: ['v3'], successor: true });
    assert.equal(r.code, 0, r.stdout + r.stderr + svc.stderr);
    assert.equal((await get()).v, 'v3');
    assert.equal([...Object.values(agent.freeSockets)].flat()[0]!.localPort, local, 'the same connection all along');
  } finally {
    agent.destroy();
    svc.stop();
  }
});
