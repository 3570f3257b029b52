// pendingHandover(): what boot() will find, known before booting, so a successor can warm up
// while the previous image still serves (after an in-place exec that time is in the pause).
import assert from 'node:assert/strict';
import test from 'node:test';
import { pendingHandover } from '../src/index.js';
import { Service } from './echo-harness.js';
import { tmpDir } from './helpers.js';

test('pendingHandover names a successor, an exec or a cold start, and consumes nothing', () => {
  const env: NodeJS.ProcessEnv = { LUO_HANDOVER: 'successor:3' };
  assert.equal(pendingHandover(env), 'successor');
  assert.equal(env.LUO_HANDOVER, 'successor:3', 'left for boot()');
  assert.equal(pendingHandover({ LUO_HANDOVER: 'kho-v1:17:0x1000:512' }), 'exec');
  assert.equal(pendingHandover({}), null);
  assert.equal(pendingHandover({ LUO_HANDOVER: '' }), null);
});

for (const [mode, want] of [['0', 'exec'], ['1', 'successor']] as const) {
  test(`the next image knows it is ${want === 'exec' ? 'exec\'d in place' : 'a successor'} before it boots`, { timeout: 60_000 }, async () => {
    const svc = new Service({ LUO_RUNDIR: tmpDir(), ECHO_SUCCESSOR: mode });
    try {
      await svc.start();
      assert.equal(svc.lines.find((l) => l.event === 'ready')!.pending, null, 'the first image starts cold');
      const r = await svc.update();
      assert.equal(r.event, 'ready', JSON.stringify(r));
      assert.equal(r.pending, want);
    } finally {
      svc.stop();
    }
  });
}
