// The switches (reference §9): luo disabled, state file off, selftest hooks off by default,
// KHO debug view, malformed values. All documented in docs/configuration.md.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { boot, resolveConfig, Selftests, State } from '../src/index.js';
import * as sys from '../src/sys/index.js';
import { tmpDir } from './helpers.js';
import { code } from './luo-helpers.js';

test('LUO_ENABLE=0: state UNDEFINED, preserving and events refused with EOPNOTSUPP naming the switch', async () => {
  const rundir = tmpDir();
  const luo = boot(resolveConfig({ rundir, arenaSize: 2 ** 26 }, { LUO_ENABLE: '0' }));
  assert.equal(luo.state, State.UNDEFINED);
  assert.equal(fs.readFileSync(path.join(rundir, 'state'), 'utf8'), 'undefined\n');
  const err = await Promise.resolve().then(() => luo.preserveFile(1, sys.memfdCreate('x'))).catch((e) => e);
  assert.equal(err.code, 'EOPNOTSUPP');
  assert.match(err.message, /LUO_ENABLE=0/);
  assert.equal(await code(() => luo.prepare()), 'EOPNOTSUPP');
  assert.equal(await code(() => luo.cancel()), 'EOPNOTSUPP');
  await luo.registerSubsystem({ name: 'still-fine' }); // the kernel's stubs accept registration
  luo.unregisterSubsystem('still-fine');
});

test('LUO_STATE_FILE=0: no state file', () => {
  const rundir = tmpDir();
  const luo = boot({ ...resolveConfig({ rundir, arenaSize: 2 ** 26 }, { LUO_STATE_FILE: 'off' }) });
  assert.equal(luo.stateFilePath, null);
  assert.deepEqual(fs.readdirSync(rundir), []);
});

test('selftest hooks are off by default (ENOTTY), on with LUO_SELFTESTS=1', async () => {
  const luo = boot({ rundir: tmpDir(), arenaSize: 2 ** 26 });
  assert.equal(luo.config.selftests, false);
  assert.equal(await code(() => new Selftests(luo)), 'ENOTTY');
  assert.equal(await code(() => luo.freezeForSelftest()), 'ENOTTY');
  assert.equal(resolveConfig({}, { LUO_SELFTESTS: 'y' }).selftests, true);
});

test('LUO_KHO_DEBUG=1 writes the outgoing handover (root and the LUO subtree) under <rundir>/debug/out', async () => {
  const rundir = tmpDir();
  const luo = boot({ ...resolveConfig({ rundir, arenaSize: 2 ** 26 }, { LUO_KHO_DEBUG: '1' }) });
  await luo.prepare();
  assert.ok(fs.existsSync(path.join(rundir, 'debug/out/fdt')));
  assert.deepEqual(fs.readdirSync(path.join(rundir, 'debug/out/sub_fdts')), ['LUO']);
  await luo.cancel();
  assert.equal(fs.existsSync(path.join(rundir, 'debug/out')), false, 'abort removes the outgoing view');
});

test('malformed values are EINVAL naming the variable; defaults follow DESIGN §4', () => {
  assert.throws(() => resolveConfig({}, { LUO_ENABLE: 'maybe' }), /LUO_ENABLE="maybe" is not a boolean/);
  assert.throws(() => resolveConfig({}, { LUO_ARENA_SIZE: 'lots' }), /LUO_ARENA_SIZE="lots" is not a size/);
  assert.throws(() => resolveConfig({}, { LUO_ON_CORRUPT: 'shrug' }), /LUO_ON_CORRUPT=shrug/);
  assert.throws(() => resolveConfig({ name: '../etc' }), /service name/);
  assert.equal(resolveConfig({}, { LUO_ARENA_SIZE: '2G' }).arenaSize, 2 ** 31);
  const c = resolveConfig({ name: 'svc' }, {});
  assert.equal(c.enabled && c.stateFile && !c.selftests && !c.khoDebug, true);
  assert.equal(c.rundir, process.getuid!() === 0 ? '/run/luo/svc' : c.rundir);
  assert.equal(resolveConfig({ name: 'svc' }, { LUO_RUNDIR: '/tmp/x' }).rundir, '/tmp/x');
});
