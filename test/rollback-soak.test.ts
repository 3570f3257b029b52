// A soak: 30 updates in a row under load, alternating in place and successor, each a random
// fault or a success (a fixed seed: the same 30 every run). After each, the service still
// serves; in the end every connection either carried on exactly once or was closed and counted
// in a report as touched by a failed version, and the serving process holds no more fds and
// no more arena memory than after the first update.
import assert from 'node:assert/strict';
import test from 'node:test';
import { StreamClient } from './echo-harness.js';
import { startTxn, stopTxn, update } from './txn-harness.js';

/** mulberry32: a small seeded generator. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FAULTS: Array<string | null> = [null, null, null, 'throw-top', 'throw-after-boot', 'exit-after-restore', 'kill-after-boot', 'die-on-probation'];

test('30 updates under load, each a random fault or a success: nothing lost beyond what the reports count, no fd or memory growth', { timeout: 300_000 }, async () => {
  const t = await startTxn([], { streaming: 16, idle: 8 });
  const random = rng(20261202);
  const closedSeen = new Set<StreamClient>();
  let reportedLost = 0;
  let serving = t.pid;
  const holdings: Array<{ otherFds: number; arenaBytes: number }> = [];
  let nextId = 1000;
  try {
    for (let i = 0; i < 30; i++) {
      const successor = i % 2 === 1;
      let fault = FAULTS[Math.floor(random() * FAULTS.length)]!;
      if (fault === 'kill-after-boot' && !successor) fault = 'exit-after-restore'; // in place a SIGKILL kills the service itself
      const flags = [...(successor ? ['--successor'] : []), '--timeout', '5', ...(fault === 'die-on-probation' ? ['--probation', '1s'] : [])];
      const run = await update(t, flags, fault);
      const what = `update ${i} (${successor ? 'successor' : 'in place'}, ${fault ?? 'no fault'}): ${run.stderr}`;
      if (fault === null) {
        assert.equal(run.code, 0, what);
        assert.equal(run.report.outcome?.outcome, 'committed', what);
      } else {
        assert.equal(run.code, 1, what);
        assert.match(String(run.report.outcome?.outcome), /^(rolled-back|cancelled)$/, what);
        reportedLost += (run.report.outcome?.lost as number | undefined) ?? 0;
      }
      serving = (run.report.outcome?.pid as number | undefined) ?? serving;
      // What the serving process holds now.
      const from = t.svc.lines.length;
      process.kill(serving, 'SIGUSR1');
      const h = await t.svc.next((l) => l.event === 'fds' && l.pid === serving && t.svc.lines.indexOf(l) >= from);
      holdings.push({ otherFds: h.otherFds as number, arenaBytes: h.arenaBytes as number });
      // Connections a failed version touched are gone: new clients take their place.
      for (const [list, k] of [[t.streaming, 0], [t.idle, 1]] as const) {
        for (let j = 0; j < list.length; j++) {
          const c = list[j]!;
          if (!c.closed) continue;
          closedSeen.add(c);
          const fresh = new StreamClient(nextId++, t.port);
          await fresh.connected();
          if (k === 1) {
            fresh.pump(16);
            await fresh.settled();
          }
          list[j] = fresh;
        }
      }
    }
    clearInterval(t.pump);
    const all = [...t.streaming, ...t.idle];
    for (const c of all) c.pump(64);
    await Promise.all(all.map((c) => c.settled()));
    for (const c of all) {
      if (c.closed) closedSeen.add(c);
      else {
        assert.equal(c.error, null, c.error ?? '');
        assert.equal(c.received, c.sent, `connection ${c.id}: every byte once`);
      }
    }
    for (const c of closedSeen) assert.ok(c.error === null || /ECONNRESET|EPIPE/.test(c.error), c.error ?? '');
    assert.equal(closedSeen.size, reportedLost, `connections closed (${closedSeen.size}) are those the reports counted as touched (${reportedLost})`);
    // No growth: the same fds besides connections after the last update as after the first
    // (within the 2 a worker thread can hold while it winds down), and no more arena memory.
    const fds = holdings.map((x) => x.otherFds);
    assert.ok(Math.max(...fds.slice(1)) - fds[1]! <= 2, `fds besides connections: ${fds.join(' ')}`);
    const arena = holdings.map((x) => x.arenaBytes);
    assert.ok(arena.at(-1)! <= arena[1]! + 64 * 1024, `arena bytes: ${arena.join(' ')}`);
  } finally {
    stopTxn(t);
  }
});
