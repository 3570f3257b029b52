// Subsystem rules (reference §3.3-§3.5): registration, names, callback order, payloads,
// failure and rollback order, timeouts.
import assert from 'node:assert/strict';
import test from 'node:test';
import { FdtNode } from '../src/fdt/index.js';
import { State, type Subsystem } from '../src/index.js';
import { code, hooks, mkLuo } from './luo-helpers.js';

/** Subsystems that record every callback into `log`. */
function recorders(log: string[], names: string[], fail: Record<string, 'prepare' | 'freeze'> = {}): Subsystem[] {
  return names.map((name, i) => ({
    name,
    prepare() {
      log.push(`${name}.prepare`);
      if (fail[name] === 'prepare') throw Object.assign(new Error('no'), { code: 'EAGAIN' });
      return BigInt(i + 1);
    },
    freeze(data) {
      log.push(`${name}.freeze(${data})`);
      if (fail[name] === 'freeze') throw new Error('freeze broke');
      return data * 10n;
    },
    cancel(data) {
      log.push(`${name}.cancel(${data})`);
    },
  }));
}

const payloads = (luo: ReturnType<typeof mkLuo>): Record<string, bigint> => {
  const addr = luo.outgoingTreeAddress!;
  const n = luo.kho.readFdt(addr).lookup('/subsystems')!;
  return Object.fromEntries([...n.props.keys()].filter((k) => k !== 'compatible').map((k) => [k, n.u64(k)!]));
};

test('the same subsystem or the same name twice is EEXIST; a bad name is EINVAL; unknown unregister is ENOENT', async () => {
  const luo = mkLuo();
  const a: Subsystem = { name: 'a' };
  await luo.registerSubsystem(a);
  assert.equal(await code(() => luo.registerSubsystem(a)), 'EEXIST');
  assert.equal(await code(() => luo.registerSubsystem({ name: 'a' })), 'EEXIST');
  assert.equal(await code(() => luo.registerSubsystem({ name: 'file-descriptors' })), 'EEXIST', 'reserved for the files subsystem');
  assert.equal(await code(() => luo.registerSubsystem({ name: 'has space' })), 'EINVAL');
  assert.equal(await code(() => luo.registerSubsystem({ name: '' })), 'EINVAL');
  luo.unregisterSubsystem(a);
  assert.equal(await code(() => luo.unregisterSubsystem(a)), 'ENOENT');
});

test('callbacks run in registration order in every phase; cancel runs forward too', async () => {
  const log: string[] = [];
  const luo = mkLuo();
  for (const s of recorders(log, ['c', 'a', 'b'])) await luo.registerSubsystem(s);
  await luo.prepare();
  await hooks(luo).freeze();
  await luo.cancel();
  assert.deepEqual(log, ['c.prepare', 'a.prepare', 'b.prepare', 'c.freeze(1)', 'a.freeze(2)', 'b.freeze(3)', 'c.cancel(10)', 'a.cancel(20)', 'b.cancel(30)']);
});

test('payloads land in /subsystems/<name> of the "luo-v1" tree as u64s; cancel resets them to 0', async () => {
  const luo = mkLuo();
  for (const s of recorders([], ['x', 'y'])) await luo.registerSubsystem(s);
  await luo.prepare();
  const tree = luo.kho.readFdt(luo.outgoingTreeAddress!);
  assert.equal(tree.root.string('compatible'), 'luo-v1');
  assert.equal(tree.root.u64('liveupdate-number'), 1n);
  assert.equal(tree.lookup('/subsystems')!.string('compatible'), 'subsystems-v1');
  assert.deepEqual(payloads(luo), { x: 1n, y: 2n, 'file-descriptors': payloads(luo)['file-descriptors']! });
  await hooks(luo).freeze();
  assert.equal(payloads(luo).x, 10n);
  assert.equal(payloads(luo).y, 20n);
  await luo.cancel();
  assert.equal(luo.outgoingTreeAddress, null, 'the tree is freed by CANCEL');
});

test('a prepare failure at subsystem k cancels only the ones before k, forward; k and later untouched; state NORMAL', async () => {
  const log: string[] = [];
  const luo = mkLuo();
  for (const s of recorders(log, ['a', 'b', 'k', 'z'], { k: 'prepare' })) await luo.registerSubsystem(s);
  const err = await luo.prepare().catch((e) => e);
  assert.equal(err.code, 'EAGAIN', 'the callback\'s errno is returned');
  assert.match(err.message, /subsystem "k" prepare/);
  assert.deepEqual(log, ['a.prepare', 'b.prepare', 'k.prepare', 'a.cancel(1)', 'b.cancel(2)']);
  assert.equal(luo.state, State.NORMAL);
  assert.equal(luo.kho.finalized, false);
  assert.equal(luo.outgoingTreeAddress, null, 'no tree is left behind');
});

test('a prepare that throws a plain Error fails PREPARE with ECANCELED and the message', async () => {
  const luo = mkLuo();
  await luo.registerSubsystem({ name: 'thrower', prepare: () => { throw new Error('disk on fire'); } });
  const err = await luo.prepare().catch((e) => e);
  assert.equal(err.code, 'ECANCELED');
  assert.match(err.message, /subsystem "thrower" prepare: disk on fire/);
  assert.equal(luo.state, State.NORMAL);
});

test('a prepare that runs past its timeout fails with ETIMEDOUT and is rolled back', async () => {
  const log: string[] = [];
  const luo = mkLuo({ timeouts: { prepare: 50 } });
  await luo.registerSubsystem(recorders(log, ['first'])[0]!);
  await luo.registerSubsystem({ name: 'hangs', prepare: () => new Promise(() => {}) });
  const t0 = Date.now();
  assert.equal(await code(() => luo.prepare()), 'ETIMEDOUT');
  assert.ok(Date.now() - t0 < 5000);
  assert.deepEqual(log, ['first.prepare', 'first.cancel(1)']);
  assert.equal(luo.state, State.NORMAL);
});

test('a freeze failure cancels every subsystem (all were prepared), aborts KHO and returns to NORMAL', async () => {
  const log: string[] = [];
  const luo = mkLuo();
  for (const s of recorders(log, ['a', 'k', 'z'], { k: 'freeze' })) await luo.registerSubsystem(s);
  await luo.prepare();
  assert.equal(await code(() => hooks(luo).freeze()), 'ECANCELED');
  assert.deepEqual(log.slice(3), ['a.freeze(1)', 'k.freeze(2)', 'a.cancel(10)', 'k.cancel(2)', 'z.cancel(3)']);
  assert.equal(luo.state, State.NORMAL);
  assert.equal(luo.kho.finalized, false);
});

test('async callbacks are awaited', async () => {
  const luo = mkLuo();
  await luo.registerSubsystem({ name: 'async', prepare: async () => { await new Promise((r) => setTimeout(r, 20)); return 77n; } });
  await luo.prepare();
  assert.equal(payloads(luo).async, 77n);
});

test('getSubsystemData outside UPDATED is ENOENT', async () => {
  const luo = mkLuo();
  await luo.registerSubsystem({ name: 's', prepare: () => 5n });
  assert.equal(await code(() => luo.getSubsystemData('s')), 'ENOENT');
  await luo.prepare();
  assert.equal(await code(() => luo.getSubsystemData('s')), 'ENOENT');
});

test('a subsystem can allocate preserved memory and pass its address as the payload (luo_alloc_preserve)', async () => {
  const luo = mkLuo();
  let addr = 0;
  await luo.registerSubsystem({
    name: 'mem',
    prepare() {
      addr = luo.allocPreserve(8192);
      luo.view(addr, 4).set([1, 2, 3, 4]);
      return addr;
    },
    cancel(data) {
      luo.unpreserveFree(Number(data), 8192);
    },
  });
  await luo.prepare();
  assert.equal(payloads(luo).mem, BigInt(addr));
  assert.equal(luo.kho.isPreserved(addr), true);
  await luo.cancel();
  assert.equal(luo.kho.isPreserved(addr), false, 'cancel ran after KHO was aborted, so unpreserve worked');
  assert.ok(new FdtNode('') instanceof FdtNode);
});
