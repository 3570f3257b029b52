/*
 * Harness for the tests of how a successor adopts idle connections: `n` idle connections to
 * the echo service, then a live update to a successor; once the new image has begun adopting
 * the idle ones, the last one opened sends. Checks the update succeeded and every byte came
 * back exactly once; returns how many connections were adopted before that last one.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { connectClients, Service } from './echo-harness.js';
import { tmpDir } from './helpers.js';

export async function rankOfLateSender(n: number, env: NodeJS.ProcessEnv): Promise<number> {
  const rankFile = path.join(tmpDir(), 'rank-port');
  const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: '1', ECHO_RANK_FILE: rankFile, LUO_TRACE: '1', ...env });
  try {
    const port = await svc.start();
    const clients = await connectClients(port, n, { echo: 8 });
    const last = clients.at(-1)!;
    fs.writeFileSync(rankFile, String(last.sock.localPort));
    const from = svc.stderr.length;
    const pid = svc.pid;
    const ready = svc.update();
    // Once the new image has decided which connections were busy at the handover (none of
    // these: all idle) and begun adopting the others, the last one opened sends.
    for (;;) {
      const t = svc.stderr.slice(from);
      if (/restoreServer: \d+ connections, \d+ busy first/.test(t)) break;
      if (svc.lines.some((l) => l.event === 'update-failed')) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    last.pump(64);
    const r = await ready;
    assert.equal(r.event, 'ready', `${JSON.stringify(r)}; stderr: ${svc.stderr.slice(-2000)}`);
    assert.notEqual(r.pid, pid);
    await last.settled();
    assert.equal(last.received, last.sent, 'its bytes, exactly once');
    assert.ok((r.rankOfPort as number) >= 0, `the connection was adopted: ${JSON.stringify(r)}`);
    for (const c of clients) c.pump(8);
    await Promise.all(clients.map((c) => c.settled()));
    for (const c of clients) assert.equal(c.received, c.sent);
    return r.rankOfPort as number;
  } finally {
    svc.stop();
  }
}
