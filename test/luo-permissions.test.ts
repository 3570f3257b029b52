// One test per row of the reference's permission table (§2.5): which operations are allowed
// in which global state, and the errno otherwise.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Event } from '../src/index.js';
import * as sys from '../src/sys/index.js';
import { imagePath, jsonLines, runNode, tmpDir } from './helpers.js';
import { code, hooks, inState } from './luo-helpers.js';

const probe = runNode(imagePath('luo-updated-probe'), [], { env: { ...process.env, LUO_RUNDIR: tmpDir() } }).then((r) => {
  assert.equal(r.code, 0, r.stderr);
  return jsonLines(r.stdout)[0]!;
});
const STATES = ['normal', 'prepared', 'frozen'] as const;
const busy = (s: string): string => (s === 'normal' ? 'ok' : 'EBUSY');

test('FD_PRESERVE and FD_UNPRESERVE: NORMAL and UPDATED only, else EBUSY', async () => {
  for (const s of STATES) {
    const luo = await inState(s);
    assert.equal(await code(() => luo.preserveFile(1, sys.memfdCreate('p'))), busy(s), `preserve in ${s}`);
    const pre = await inState('normal');
    pre.preserveFile(2, 0);
    if (s !== 'normal') await pre.prepare();
    if (s === 'frozen') await hooks(pre).freeze();
    assert.equal(await code(() => pre.unpreserveFile(2)), busy(s), `unpreserve in ${s}`);
  }
  const p = await probe;
  assert.equal(p.preserve, 'ok');
  assert.equal(p.unpreserveOutgoing, 'ok');
  assert.equal(p.unpreserveIncoming, 'ENOENT', 'in UPDATED unpreserve acts on the outgoing set only');
});

test('register/unregister a subsystem: NORMAL and UPDATED only, else EBUSY', async () => {
  for (const s of STATES) {
    const luo = await inState(s);
    assert.equal(await code(() => luo.registerSubsystem({ name: 'late' })), busy(s), `register in ${s}`);
  }
  const luo = await inState('normal');
  await luo.registerSubsystem({ name: 'x' });
  await luo.prepare();
  assert.equal(await code(() => luo.unregisterSubsystem('x')), 'EBUSY');
  const p = await probe;
  assert.equal(p.registerSubsystemBoot, 'ok');
  assert.equal(p.unregisterSubsystem, 'ok');
});

test('register/unregister a file handler: NORMAL and UPDATED only, else EBUSY', async () => {
  const h = { compatible: 'h-v1', canPreserve: () => false, retrieve: () => null };
  for (const s of STATES) {
    const luo = await inState(s);
    assert.equal(await code(() => luo.registerFileHandler(h)), busy(s), `register in ${s}`);
    assert.equal(await code(() => luo.unregisterFileHandler('fd-v2')), busy(s), `unregister in ${s}`);
  }
  const p = await probe;
  assert.equal(p.registerHandler, 'ok');
  assert.equal(p.unregisterHandler, 'ok');
});

test('FD_RESTORE: UPDATED only, else EBUSY', async () => {
  for (const s of STATES) {
    const luo = await inState(s);
    assert.equal(await code(() => luo.restoreFile(1)), 'EBUSY', s);
  }
  assert.equal((await probe).restore, 'ok');
});

test('SET_FD_EVENT(FINISH): UPDATED only, else EBUSY', async () => {
  for (const s of STATES) {
    const luo = await inState(s);
    assert.equal(await code(() => luo.setFdEvent(1, Event.FINISH)), 'EBUSY', s);
  }
  assert.equal((await probe).finishFd, 'ok');
});

test('SET_FD_EVENT(PREPARE/FREEZE/CANCEL): any state, no state check', async () => {
  for (const s of STATES) {
    const luo = await inState('normal');
    luo.preserveFile(3, 0);
    if (s !== 'normal') await luo.prepare();
    if (s === 'frozen') await hooks(luo).freeze();
    for (const ev of [Event.PREPARE, Event.FREEZE, Event.CANCEL]) {
      assert.equal(await code(() => luo.setFdEvent(3, ev)), 'ok', `${Event[ev]} in ${s}`);
    }
  }
});

test('GET_STATE and GET_FD_STATE: any state', async () => {
  for (const s of STATES) {
    const luo = await inState('normal');
    luo.preserveFile(4, 0);
    if (s !== 'normal') await luo.prepare();
    assert.equal(typeof luo.state, 'number');
    assert.equal(await code(() => luo.getFdState(4)), 'ok', s);
  }
  assert.equal((await probe).getFdStateIncoming, 4, 'an incoming file is UPDATED');
});
