// Unmodified express, fastify and koa apps under `node --import luo/register`, three updates
// each alternating in place and successor, under a keep-alive http.Agent issuing requests
// back to back: no request fails, no connection is opened again (0 reconnects), and the
// version served switches each time.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import test from 'node:test';
import { DropIn } from './dropin-harness.js';

function get(agent: http.Agent, port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

for (const app of ['express-app.mjs', 'fastify-app.mjs', 'koa-app.mjs']) {
  test(`${app.replace('-app.mjs', '')}: every request answered across three updates, no reconnect`, { timeout: 180_000 }, async () => {
    const svc = await DropIn.start(app, ['v1']);
    let opened = 0;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 6 });
    (agent as unknown as { createConnection: typeof net.createConnection }).createConnection = ((...a: Parameters<typeof net.createConnection>) => {
      opened++;
      return net.createConnection(...a);
    }) as typeof net.createConnection;
    let stop = false;
    let n = 0;
    const failures: string[] = [];
    const seen: string[] = [];
    const worker = async (): Promise<void> => {
      while (!stop) {
        const k = ++n;
        try {
          const r = await get(agent, svc.port, `/n/${k}`);
          const body = JSON.parse(r.body) as { n: number; v: string };
          if (r.status !== 200 || body.n !== k) failures.push(`${k}: ${r.status} ${r.body}`);
          else if (seen.at(-1) !== body.v) seen.push(body.v);
        } catch (e) {
          failures.push(`${k}: ${(e as Error).message}`);
        }
      }
    };
    try {
      const workers = Array.from({ length: 6 }, worker);
      const versions = ['v2', 'v1', 'v2'];
      for (let u = 0; u < 3; u++) {
        const before = n;
        const r = await svc.update({ args: [versions[u]!], successor: u === 1 });
        assert.equal(r.code, 0, `update ${u + 1}: ${r.stdout}\n${r.stderr}\n${svc.stderr}`);
        while (seen.at(-1) !== versions[u] || n < before + 50) await new Promise((res) => setTimeout(res, 5));
      }
      stop = true;
      await Promise.all(workers);
      assert.deepEqual(failures, [], 'no request failed');
      assert.deepEqual(seen.filter((v, i, a) => i === 0 || a[i - 1] !== v), ['v1', 'v2', 'v1', 'v2'], 'each version served in turn');
      assert.ok(opened <= 6, `the agent kept its ${opened} connections (no reconnect)`);
      assert.ok(n > 200, `requests kept flowing (${n})`);
    } finally {
      stop = true;
      agent.destroy();
      svc.stop();
    }
  });
}
