/*
 * Harness for the transaction tests: the txn service (test/images/txn-service.ts) under load,
 * updated through the real agent (`luo update`) into a next version told to fail one way
 * (`--fault F`); and what every failed update must end with, checked in one place:
 *   - the agent: exit 1, ERR_UPDATE_FAILED, the reason in words, within seconds;
 *   - the old version serving (the same pid in place, the previous process in successor mode);
 *   - its memory byte for byte as at the freeze (the 4 MiB pattern the next version scribbled
 *     over in its own copy);
 *   - every connection the next version did not touch carrying on exactly once (streaming
 *     clients check every byte), and those it touched closed and counted in the report.
 */
import assert from 'node:assert/strict';
import { Service, StreamClient } from './echo-harness.js';
import { cliPath, imagePath, jsonLines, runNode, tmpDir } from './helpers.js';

export interface Txn { svc: Service; port: number; rundir: string; pid: number; streaming: StreamClient[]; idle: StreamClient[]; pump: NodeJS.Timeout }

export async function startTxn(args: string[] = [], clients = { streaming: 12, idle: 8 }): Promise<Txn> {
  const rundir = tmpDir('luo-txn-');
  const svc = new Service({ LUO_RUNDIR: rundir }, 'txn-service', args);
  const ready = await svc.next((l) => l.event === 'ready');
  const port = ready.port as number;
  const streaming = Array.from({ length: clients.streaming }, (_, i) => new StreamClient(i, port));
  const idle = Array.from({ length: clients.idle }, (_, i) => new StreamClient(100 + i, port));
  await Promise.all([...streaming, ...idle].map((c) => c.connected()));
  // Every idle client says one thing first (so the service has accepted and tracked it).
  for (const c of idle) c.pump(16);
  await Promise.all(idle.map((c) => c.settled()));
  const pump = setInterval(() => streaming.forEach((c) => c.pump(256)), 5).unref();
  await new Promise((r) => setTimeout(r, 200));
  return { svc, port, rundir, pid: ready.pid as number, streaming, idle, pump };
}

export interface AgentRun { code: number | null; report: Record<string, any>; stdout: string; stderr: string; ms: number }

/** `luo update --json [flags] -- node txn-service.js --fault F` (no fault: the same image;
 *  `command`: another command line altogether). */
export async function update(t: Txn, flags: string[], fault: string | null, serviceArgs: string[] = [], command?: string[]): Promise<AgentRun> {
  const next = command ?? [process.execPath, imagePath('txn-service'), ...serviceArgs, ...(fault ? ['--fault', fault] : [])];
  const t0 = Date.now();
  const r = await runNode(cliPath, ['update', '--rundir', t.rundir, '--json', ...flags, '--', ...next], { timeoutMs: 90_000 });
  return { code: r.code, report: jsonLines(r.stdout).at(-1) ?? {}, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
}

/**
 * After a failed update: the agent's report; the old version serving with its memory intact;
 * untouched connections exactly once, touched ones closed and counted. `outcome` is what the
 * report must say: 'cancelled' (it failed before the handover) or 'rolled-back'.
 */
export async function assertOldServes(t: Txn, run: AgentRun, outcome: 'cancelled' | 'rolled-back', reason: RegExp, mode: 'exec' | 'successor'): Promise<void> {
  const why = `${run.stderr}\n${run.stdout}`;
  assert.equal(run.code, 1, why);
  assert.equal(run.report.ok, false, why);
  assert.equal(run.report.code, 'ERR_UPDATE_FAILED', why);
  assert.equal(run.report.outcome?.outcome, outcome, why);
  assert.match(run.report.error as string, reason);
  assert.match(run.report.error as string, outcome === 'cancelled' ? /cancelled: the previous version serves/ : /rolled back: the previous version serves \(pid \d+\)/);
  assert.ok(run.ms < 30_000, `the agent knew in ${run.ms} ms`);

  // The old version serves: a new connection is echoed by it.
  const fresh = new StreamClient(999, t.port);
  await fresh.connected();
  fresh.pump(64);
  await fresh.settled();
  assert.equal(fresh.received, 64, 'a new connection is served');
  fresh.sock.destroy();

  // Memory exactly as at the freeze: the old image's own view (successor) or the previous
  // image exec'd again (in place) finds the pattern the next version scribbled over.
  const frozen = t.svc.lines.filter((l) => l.event === 'frozen');
  for (const f of frozen) assert.equal(f.checksum, 'pattern', 'the memory as handed over');
  if (outcome === 'rolled-back') {
    if (mode === 'successor') {
      const resumed = await t.svc.next((l) => l.event === 'resumed' && l.pid === t.pid);
      assert.equal(resumed.checksum, 'pattern', 'the old image\'s memory as at the freeze');
      assert.equal((resumed.lastUpdate as Record<string, unknown>).outcome, 'rolled-back');
    } else {
      const back = await t.svc.next((l) => l.event === 'ready' && (l.lastUpdate as Record<string, unknown> | null)?.outcome === 'rolled-back');
      assert.equal(back.pid, t.pid, 'the same pid: the previous image came back in place');
      assert.equal(back.checksum, 'pattern', 'the previous image finds the memory as it handed it over');
      assert.equal(back.state, 'updated');
    }
  }

  // Connections: the idle ones were never touched (nothing came on them): all carry on. Each
  // streaming one carries on exactly once, or (touched by the next version) was closed; the
  // report counts exactly those.
  clearInterval(t.pump);
  for (const c of t.idle) c.pump(32);
  const all = [...t.streaming, ...t.idle];
  for (const c of t.streaming) c.pump(128);
  await Promise.all(all.map((c) => c.settled()));
  // A connection closed by the old version (touched by the next) may come as a reset: the
  // peer's bytes were still unread. Never a wrong byte.
  for (const c of all) if (!(c.closed && /ECONNRESET|EPIPE/.test(c.error ?? ''))) assert.equal(c.error, null, c.error ?? '');
  for (const c of t.idle) {
    assert.equal(c.closed, false, `idle connection ${c.id} was resumed`);
    assert.equal(c.received, c.sent);
  }
  const closed = t.streaming.filter((c) => c.closed);
  for (const c of t.streaming.filter((x) => !x.closed)) assert.equal(c.received, c.sent, `connection ${c.id}: every byte once`);
  const lost = outcome === 'rolled-back' ? (run.report.outcome?.lost as number) : 0;
  assert.equal(closed.length, lost, `closed connections (${closed.length}) are the ones the report counts (${lost})`);
  if (outcome === 'cancelled') assert.equal(closed.length, 0, 'nothing was handed over: nothing is lost');
}

export function stopTxn(t: Txn): void {
  clearInterval(t.pump);
  for (const c of [...t.streaming, ...t.idle]) c.sock.destroy();
  t.svc.stop();
}
