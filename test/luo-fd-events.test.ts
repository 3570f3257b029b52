// SET_FD_EVENT, row by row (reference §1.4): per-file transitions ahead of the global ones.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Event, State, type FileHandler } from '../src/index.js';
import { code, mkLuo } from './luo-helpers.js';

function setup(opts: { failPrepare?: boolean } = {}) {
  const log: string[] = [];
  const luo = mkLuo();
  const h: FileHandler = {
    compatible: 'ev-v1',
    canPreserve: (f) => f === 'file',
    prepare: () => {
      log.push('prepare');
      if (opts.failPrepare) throw Object.assign(new Error('nope'), { code: 'EIO' });
      return 9n;
    },
    freeze: ({ data }) => {
      log.push(`freeze ${data}`);
      return data + 1n;
    },
    cancel: ({ data }) => void log.push(`cancel ${data}`),
    retrieve: () => null,
  };
  luo.registerFileHandler(h);
  luo.preserveFile(1, 'file');
  return { luo, log };
}

test('PREPARE: NORMAL → prepare() → PREPARED; already PREPARED or FROZEN: no-op, 0', async () => {
  const { luo, log } = setup();
  await luo.setFdEvent(1, Event.PREPARE);
  assert.equal(luo.getFdState(1), State.PREPARED);
  await luo.setFdEvent(1, Event.PREPARE);
  await luo.setFdEvent(1, Event.FREEZE);
  await luo.setFdEvent(1, Event.PREPARE);
  assert.deepEqual(log, ['prepare', 'freeze 9']);
});

test('PREPARE failure: stays NORMAL and the error is returned', async () => {
  const { luo } = setup({ failPrepare: true });
  assert.equal(await code(() => luo.setFdEvent(1, Event.PREPARE)), 'EIO');
  assert.equal(luo.getFdState(1), State.NORMAL);
});

test('FREEZE: PREPARED → freeze() → FROZEN; any other state: 0, no change', async () => {
  const { luo, log } = setup();
  await luo.setFdEvent(1, Event.FREEZE);
  assert.equal(luo.getFdState(1), State.NORMAL);
  await luo.setFdEvent(1, Event.PREPARE);
  await luo.setFdEvent(1, Event.FREEZE);
  assert.equal(luo.getFdState(1), State.FROZEN);
  await luo.setFdEvent(1, Event.FREEZE);
  assert.deepEqual(log, ['prepare', 'freeze 9']);
});

test('CANCEL: NORMAL no-op; PREPARED or FROZEN → cancel(data), data reset to 0, NORMAL', async () => {
  const { luo, log } = setup();
  await luo.setFdEvent(1, Event.CANCEL);
  await luo.setFdEvent(1, Event.PREPARE);
  await luo.setFdEvent(1, Event.CANCEL);
  await luo.setFdEvent(1, Event.PREPARE);
  await luo.setFdEvent(1, Event.FREEZE);
  await luo.setFdEvent(1, Event.CANCEL);
  assert.equal(luo.getFdState(1), State.NORMAL);
  assert.deepEqual(log, ['prepare', 'cancel 9', 'prepare', 'freeze 9', 'cancel 10']);
});

test('a file prepared per-FD is not prepared again by the global PREPARE', async () => {
  const { luo, log } = setup();
  await luo.setFdEvent(1, Event.PREPARE);
  await luo.prepare();
  assert.deepEqual(log, ['prepare']);
});

test('FINISH outside UPDATED: EBUSY; a missing token: ENOENT for every event; an unknown event: EOPNOTSUPP', async () => {
  const { luo } = setup();
  assert.equal(await code(() => luo.setFdEvent(1, Event.FINISH)), 'EBUSY');
  for (const ev of [Event.PREPARE, Event.FREEZE, Event.CANCEL]) assert.equal(await code(() => luo.setFdEvent(99, ev)), 'ENOENT');
  assert.equal(await code(() => luo.getFdState(99)), 'ENOENT');
  assert.equal(await code(() => luo.setFdEvent(1, 7)), 'EOPNOTSUPP');
});
