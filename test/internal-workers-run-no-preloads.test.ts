// luo's own worker threads (the control device's I/O thread here; the guard's watchdog is
// started the same way) run none of the service's --import preloads: a preload given in
// NODE_OPTIONS (luo/register, luo's guard, a service's instrumentation) would load again in
// each, slowing its start and holding its file open meanwhile (a watchdog terminated at
// FINISH while it still loaded the guard left an fd on guard.js open).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { cliPath, runNode, startDeviceService, tmpDir } from './helpers.js';

test("luo's own worker threads run none of the service's --import preloads", async () => {
  const dir = tmpDir();
  const log = path.join(dir, 'preloads');
  const preload = path.join(dir, 'preload.mjs');
  fs.writeFileSync(preload, `import fs from 'node:fs';\nimport { isMainThread } from 'node:worker_threads';\nfs.appendFileSync(${JSON.stringify(log)}, isMainThread ? 'main\\n' : 'a worker\\n');\n`);
  const rundir = path.join(dir, 'run');
  const svc = await startDeviceService({ LUO_RUNDIR: rundir, NODE_OPTIONS: `--import ${preload}` });
  try {
    // The device answers: its I/O thread has started (and loaded whatever it loads).
    const r = await runNode(cliPath, ['state', '--rundir', rundir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.readFileSync(log, 'utf8'), 'main\n', 'the preload ran on the main thread only');
  } finally {
    svc.child.kill('SIGKILL');
  }
});
