// Port of v3's tools/testing/selftests/liveupdate/liveupdate.c, fixture "state".
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { afterEach, beforeEach, test } from 'node:test';
import { Event, State, type Luo } from '../src/index.js';
import { hooks, mkLuo } from './luo-helpers.js';

let luo: Luo;
const sysfs = (): string => fs.readFileSync(luo.stateFilePath!, 'utf8');

beforeEach(() => {
  luo = mkLuo();
});
afterEach(async () => {
  if (luo.state !== State.NORMAL) await luo.setEvent(Event.CANCEL);
});

test('state.normal: GET_STATE is NORMAL', () => {
  assert.equal(luo.state, State.NORMAL);
});

test('state.prepared: PREPARE → PREPARED, CANCEL → NORMAL', async () => {
  await luo.setEvent(Event.PREPARE);
  assert.equal(luo.state, State.PREPARED);
  await luo.setEvent(Event.CANCEL);
  assert.equal(luo.state, State.NORMAL);
});

test('state.sysfs_normal: the state file reads "normal"', () => {
  assert.equal(sysfs(), 'normal\n');
});

test('state.sysfs_prepared: "prepared" after PREPARE, "normal" after CANCEL', async () => {
  await luo.setEvent(Event.PREPARE);
  assert.equal(sysfs(), 'prepared\n');
  await luo.setEvent(Event.CANCEL);
  assert.equal(sysfs(), 'normal\n');
});

test('state.sysfs_frozen: PREPARE → "prepared", selftest FREEZE → "frozen", CANCEL → "normal"', async () => {
  await luo.setEvent(Event.PREPARE);
  assert.equal(sysfs(), 'prepared\n');
  await hooks(luo).freeze();
  assert.equal(sysfs(), 'frozen\n');
  await luo.setEvent(Event.CANCEL);
  assert.equal(sysfs(), 'normal\n');
});
