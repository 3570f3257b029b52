// HTTP keep-alive across live updates: clients keep issuing requests on the same connections
// through three updates; no request fails, no connection is re-opened, and on each connection
// the responses switch from the old version's to the new version's.
import assert from 'node:assert/strict';
import http from 'node:http';
import test from 'node:test';
import { Service } from './echo-harness.js';
import { tmpDir } from './helpers.js';

test('keep-alive clients see zero failed requests across three updates, and the new code answers on the same connections', { timeout: 90_000 }, async () => {
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_HTTP: '1' });
  try {
    const port = await svc.start();
    const CONNS = 20;
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONNS });
    const perSocket = new Map<number, string[]>(); // client port → versions answered, in order
    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const get = (i: number): Promise<void> =>
      new Promise((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, path: `/r${i}`, agent }, (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => {
            const local = req.socket!.localPort!;
            if (res.statusCode !== 200 || !body.endsWith(`:/r${i}`)) failures.push(`status ${res.statusCode} body ${body}`);
            else {
              const v = body[0]!;
              const seen = perSocket.get(local) ?? [];
              if (seen.at(-1) !== v) seen.push(v);
              perSocket.set(local, seen);
              ok++;
            }
            resolve();
          });
        });
        req.on('error', (e) => {
          failures.push(e.message);
          resolve();
        });
      });
    const loops = Array.from({ length: CONNS }, async (_, k) => {
      let i = k * 1_000_000;
      while (running) await get(i++);
    });
    const readies = [];
    for (let u = 0; u < 3; u++) {
      await new Promise((r) => setTimeout(r, 600));
      readies.push(await svc.update());
    }
    await new Promise((r) => setTimeout(r, 600));
    running = false;
    await Promise.all(loops);
    agent.destroy();

    assert.deepEqual(readies.map((r) => r.event), ['ready', 'ready', 'ready'], JSON.stringify(readies));
    assert.deepEqual(failures, [], 'no request failed');
    assert.ok(ok > 300, `${ok} requests answered`);
    assert.equal(perSocket.size, CONNS, 'every request went over the original connections: none was re-opened');
    for (const [p, versions] of perSocket) assert.deepEqual(versions, ['a', 'b', 'a', 'b'], `connection from port ${p}`);
  } finally {
    svc.stop();
  }
});
