// Port of v3's liveupdate.c fixture "subsystem": 16 dummy subsystems, each holding a page
// filled with 'A'+i, through the selftest hooks (luo_selftests.c).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { afterEach, beforeEach, test } from 'node:test';
import { Event, MAX_SUBSYSTEMS, PAGE_SIZE, State, type Luo, type Selftests } from '../src/index.js';
import { hooks, mkLuo } from './luo-helpers.js';

let luo: Luo;
let st: Selftests;
const pages = Array.from({ length: MAX_SUBSYSTEMS }, (_, i) => new Uint8Array(PAGE_SIZE).fill(0x41 + i));
const name = (i: number): string => `ksft_luo.${i}`;

beforeEach(() => {
  luo = mkLuo();
  st = hooks(luo);
});
afterEach(async () => {
  if (luo.state !== State.NORMAL) await luo.setEvent(Event.CANCEL);
});

test('subsystem.register_unregister: one subsystem registers and unregisters', async () => {
  await st.register(name(0), pages[0]!);
  st.unregister(name(0));
});

test('subsystem.double_unregister: the second unregister fails with EINVAL or ENOENT', async () => {
  await st.register(name(0), pages[0]!);
  st.unregister(name(0));
  assert.throws(() => st.unregister(name(0)), (e: { code: string }) => e.code === 'EINVAL' || e.code === 'ENOENT');
});

test('subsystem.register_unregister_many: all 16 register and unregister; a 17th is ENOMEM', async () => {
  for (let i = 0; i < MAX_SUBSYSTEMS; i++) await st.register(name(i), pages[i]!);
  await assert.rejects(st.register('ksft_luo.16', pages[0]!), { code: 'ENOMEM' });
  for (let i = 0; i < MAX_SUBSYSTEMS; i++) st.unregister(name(i));
});

test('subsystem.getdata_verify: after PREPARE each subsystem\'s data matches its page; CANCEL → NORMAL', async () => {
  for (let i = 0; i < MAX_SUBSYSTEMS; i++) await st.register(name(i), pages[i]!);
  await luo.setEvent(Event.PREPARE);
  assert.equal(luo.state, State.PREPARED);
  for (let i = 0; i < MAX_SUBSYSTEMS; i++) assert.deepEqual(st.getData(name(i)), pages[i], name(i));
  await luo.setEvent(Event.CANCEL);
  assert.equal(luo.state, State.NORMAL);
  for (let i = 0; i < MAX_SUBSYSTEMS; i++) st.unregister(name(i));
});

test('subsystem.prepare_fail: "ksft_prepare_fail.15" makes PREPARE fail; renamed, PREPARE → FREEZE → CANCEL ends "normal"', async () => {
  for (let i = 0; i < MAX_SUBSYSTEMS - 1; i++) await st.register(name(i), pages[i]!);
  await st.register('ksft_prepare_fail.15', pages[15]!);
  await assert.rejects(luo.setEvent(Event.PREPARE), { code: 'EAGAIN' });
  assert.equal(luo.state, State.NORMAL);
  for (let i = 0; i < MAX_SUBSYSTEMS - 1; i++) st.unregister(name(i));
  st.unregister('ksft_prepare_fail.15');
  for (let i = 0; i < MAX_SUBSYSTEMS; i++) await st.register(name(i), pages[i]!);
  await luo.setEvent(Event.PREPARE);
  await st.freeze();
  await luo.setEvent(Event.CANCEL);
  assert.equal(fs.readFileSync(luo.stateFilePath!, 'utf8'), 'normal\n');
  for (let i = 0; i < MAX_SUBSYSTEMS; i++) st.unregister(name(i));
});
