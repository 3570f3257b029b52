// `luo list`: the services under a rundir root, each with its state and pid, live or dead.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { cliPath, runNode, tmpDir } from './helpers.js';
import { DropIn, repoRoot } from './dropin-harness.js';

test('luo list shows each service under the root, live or dead', { timeout: 60_000 }, async () => {
  const root = tmpDir('luo-list-');
  const a = await DropIn.start('cjs-app.cjs', ['v1'], { LUO_RUNDIR: path.join(root, 'alpha') });
  const b = await DropIn.start('cjs-app.cjs', ['v1'], { LUO_RUNDIR: path.join(root, 'beta') });
  fs.mkdirSync(path.join(root, 'not-a-service'));
  try {
    const pidB = b.pid;
    b.stop();
    await new Promise((r) => b.child.once('exit', r));
    const r = await runNode(cliPath, ['list', '--root', root, '--json'], { cwd: repoRoot });
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as Array<{ name: string; state: string; pid: number; live: boolean }>;
    assert.deepEqual(rows.map((x) => [x.name, x.live, x.pid]), [['alpha', true, a.pid], ['beta', false, pidB]]);
    assert.equal(rows[0]!.state, 'normal');
    const t = await runNode(cliPath, ['list', '--root', root], { cwd: repoRoot });
    assert.match(t.stdout, /^NAME\s+STATE\s+PID\s+LIVE\s+RUNDIR$/m);
    assert.match(t.stdout, new RegExp(`^alpha\\s+normal\\s+${a.pid}\\s+yes\\s`, 'm'));
    assert.match(t.stdout, new RegExp(`^beta\\s+dead\\s+${pidB}\\s+no\\s`, 'm'));
    const empty = await runNode(cliPath, ['list', '--root', tmpDir()], { cwd: repoRoot });
    assert.match(empty.stdout, /^no services under /);
  } finally {
    a.stop();
  }
});
