// An upgraded connection nobody can carry (a raw protocol after 'upgrade', not ws): the update
// is refused at PREPARE with a message that says how many and what to do, and the connection
// goes on with the same version, untouched. With upgraded: 'close' the update goes through,
// the connection is closed at the freeze, and the agent's report counts it.
import assert from 'node:assert/strict';
import net from 'node:net';
import test from 'node:test';
import { cliPath, imagePath, runNode } from './helpers.js';
import { DropIn, repoRoot } from './dropin-harness.js';

/** An upgraded raw connection: lines in, "<version>:<line>" out. */
async function upgrade(port: number): Promise<{ ask(line: string): Promise<string>; closed: Promise<void> }> {
  const s = net.connect(port, '127.0.0.1');
  await new Promise((r) => s.once('connect', r));
  s.write('GET /lines HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: lines\r\n\r\n');
  let buf = '';
  const waiting: Array<(l: string) => void> = [];
  s.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).replace(/\r$/, '');
      buf = buf.slice(i + 1);
      if (line.includes(':') && !line.startsWith('HTTP/') && !/^[A-Z][a-z-]+: /.test(line)) waiting.shift()?.(line);
    }
  });
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  return { ask: (line) => new Promise((r) => (waiting.push(r), s.write(`${line}\n`))), closed };
}

async function service(upgraded: 'refuse' | 'close'): Promise<DropIn> {
  return DropIn.startImage(imagePath('upgrade-raw'), ['v1'], { UPGRADED: upgraded });
}

test('an unowned upgraded connection refuses the update, and carries on untouched', { timeout: 60_000 }, async () => {
  const svc = await service('refuse');
  try {
    const c = await upgrade(svc.port);
    assert.equal(await c.ask('one'), 'v1:one');
    const r = await runNode(cliPath, ['update', '--rundir', svc.rundir, '--', process.execPath, imagePath('upgrade-raw'), 'v2'], { cwd: repoRoot, env: { ...process.env, UPGRADED: 'refuse' } });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /EBUSY/);
    assert.match(r.stderr, /1 upgraded connection\(s\) have no owner that can carry them/);
    assert.match(r.stderr, /upgraded: 'close'/, 'it says what to do');
    assert.match(r.stderr, /nothing changed: the previous version serves/);
    assert.equal(await c.ask('two'), 'v1:two', 'the same version goes on serving it');
  } finally {
    svc.stop();
  }
});

test("upgraded: 'close' closes it at the freeze, and the report counts it", { timeout: 60_000 }, async () => {
  const svc = await service('close');
  try {
    const c = await upgrade(svc.port);
    assert.equal(await c.ask('one'), 'v1:one');
    const r = await runNode(cliPath, ['update', '--rundir', svc.rundir, '--json', '--', process.execPath, imagePath('upgrade-raw'), 'v2'], { cwd: repoRoot, env: { ...process.env, UPGRADED: 'close' } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const rep = JSON.parse(r.stdout.trim().split('\n').pop()!) as { outcome: { carried: Array<{ label: string; closedAtFreeze: number }> }; phases: Array<{ phase: string; ok: boolean; detail?: string }> };
    const srv = rep.outcome.carried.find((e) => e.label.startsWith('http'))!;
    assert.equal(srv.closedAtFreeze, 1);
    assert.ok(rep.phases.some((p) => p.phase === 'not carried' && !p.ok && /1 upgraded connection\(s\) were closed at the freeze/.test(p.detail ?? '')), JSON.stringify(rep.phases));
    await c.closed;
    const again = await upgrade(svc.port);
    assert.equal(await again.ask('three'), 'v2:three', 'the next version serves new ones');
  } finally {
    svc.stop();
  }
});
