// One test per row of the reference's transition table (§2.2), each with the exact errno for
// a wrong starting state. UPDATED rows run in a real next image (luo-updated-probe).
import assert from 'node:assert/strict';
import test from 'node:test';
import { Event, State } from '../src/index.js';
import { imagePath, jsonLines, runNode, tmpDir } from './helpers.js';
import { code, hooks, inState, mkLuo } from './luo-helpers.js';

const probe = runNode(imagePath('luo-updated-probe'), [], { env: { ...process.env, LUO_RUNDIR: tmpDir() } }).then((r) => {
  assert.equal(r.code, 0, r.stderr);
  return jsonLines(r.stdout)[0]!;
});

test('boot without a LUO subtree: NORMAL', () => {
  assert.equal(mkLuo().state, State.NORMAL);
});

test('boot with a valid "luo-v1" tree: UPDATED', async () => {
  assert.equal((await probe).state, 'updated');
});

test('NORMAL --PREPARE--> PREPARED; from PREPARED, FROZEN or UPDATED: EINVAL', async () => {
  const luo = mkLuo();
  await luo.setEvent(Event.PREPARE);
  assert.equal(luo.state, State.PREPARED);
  assert.equal(await code(() => luo.prepare()), 'EINVAL');
  await hooks(luo).freeze();
  assert.equal(await code(() => luo.prepare()), 'EINVAL');
  assert.equal((await probe).prepareInUpdated, 'EINVAL');
});

test('PREPARED --FREEZE (reboot or selftest hook)--> FROZEN; from NORMAL or FROZEN: EINVAL', async () => {
  const luo = mkLuo();
  assert.equal(await code(() => hooks(luo).freeze()), 'EINVAL');
  await luo.prepare();
  await hooks(luo).freeze();
  assert.equal(luo.state, State.FROZEN);
  assert.equal(await code(() => hooks(luo).freeze()), 'EINVAL');
});

test('SET_EVENT(FREEZE) is EINVAL in every state; an unknown event is EOPNOTSUPP', async () => {
  for (const s of ['normal', 'prepared', 'frozen'] as const) {
    const luo = await inState(s);
    assert.equal(await code(() => luo.setEvent(Event.FREEZE)), 'EINVAL', s);
    assert.equal(await code(() => luo.setEvent(42)), 'EOPNOTSUPP', s);
  }
  assert.equal((await probe).freezeEvent, 'EINVAL');
});

test('PREPARED --CANCEL--> NORMAL and FROZEN --CANCEL--> NORMAL; from NORMAL or UPDATED: ENOENT (kho_abort)', async () => {
  for (const s of ['prepared', 'frozen'] as const) {
    const luo = await inState(s);
    await luo.setEvent(Event.CANCEL);
    assert.equal(luo.state, State.NORMAL, s);
    assert.equal(luo.kho.finalized, false, 'KHO aborted');
  }
  assert.equal(await code(() => mkLuo().cancel()), 'ENOENT');
  assert.equal((await probe).cancelInUpdated, 'ENOENT');
});

test('UPDATED --FINISH--> NORMAL; from NORMAL, PREPARED or FROZEN: EINVAL', async () => {
  const p = await probe;
  assert.equal(p.finish, 'ok');
  assert.equal(p.afterFinish, 'normal');
  assert.equal(p.finishAgain, 'EINVAL');
  for (const s of ['normal', 'prepared', 'frozen'] as const) {
    assert.equal(await code(async () => (await inState(s)).setEvent(Event.FINISH)), 'EINVAL', s);
  }
});

test('PREPARE then CANCEL can repeat; preserved tokens stay registered across a CANCEL', async () => {
  const luo = mkLuo();
  luo.preserveFile(5, 0);
  for (let i = 0; i < 3; i++) {
    await luo.prepare();
    await luo.cancel();
  }
  assert.deepEqual(luo.files.outgoingTokens, [5n]);
  assert.equal(luo.getFdState(5), State.NORMAL);
});

test('transitions queue: a second event waits for the first and sees its result', async () => {
  const luo = mkLuo();
  await luo.registerSubsystem({ name: 'slow', prepare: () => new Promise((r) => setTimeout(() => r(1n), 50)) });
  const [a, b] = await Promise.all([code(() => luo.prepare()), code(() => luo.prepare())]);
  assert.deepEqual([a, b], ['ok', 'EINVAL']);
});
