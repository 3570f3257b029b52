// File rules (reference §4): handlers, tokens, token order, rollback, the files tree.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import test from 'node:test';
import { State, type FileHandler } from '../src/index.js';
import * as sys from '../src/sys/index.js';
import { code, hooks, mkLuo } from './luo-helpers.js';

/** A handler for { id } objects that logs every callback; `failOn` makes one token fail. */
function logger(log: string[], failOn?: { token: bigint; phase: 'prepare' | 'freeze' }): FileHandler<{ id: number }> {
  return {
    compatible: 'log-v1',
    canPreserve: (f) => typeof f === 'object' && f !== null && 'id' in f,
    prepare({ token }) {
      log.push(`prepare ${token}`);
      if (failOn?.phase === 'prepare' && failOn.token === token) throw Object.assign(new Error('x'), { code: 'ENOSPC' });
      return token * 100n;
    },
    freeze({ token, data }) {
      log.push(`freeze ${token}`);
      if (failOn?.phase === 'freeze' && failOn.token === token) throw new Error('freeze failed');
      return data + 1n;
    },
    cancel({ token, data }) {
      log.push(`cancel ${token} ${data}`);
    },
    retrieve: () => null,
  };
}

test('a token must be unique in the outgoing set (EEXIST); 0 and 2^64-1 are valid tokens; others EINVAL', async () => {
  const luo = mkLuo();
  luo.preserveFile(0n, 0);
  luo.preserveFile((1n << 64n) - 1n, 1);
  assert.equal(await code(() => luo.preserveFile(0n, 2)), 'EEXIST');
  assert.equal(await code(() => luo.preserveFile(-1, 2)), 'EINVAL');
  assert.equal(await code(() => luo.preserveFile(1n << 64n, 2)), 'EINVAL');
});

test('no handler accepts the file: ENOENT; the first accepting handler in registration order wins; fd-v2 is asked last', async () => {
  const luo = mkLuo();
  assert.equal(await code(() => luo.preserveFile(1, { some: 'object' })), 'ENOENT');
  const log: string[] = [];
  luo.registerFileHandler(logger(log));
  luo.registerFileHandler({ ...logger(log), compatible: 'second-v1' });
  luo.preserveFile(2, { id: 1 });
  assert.equal(luo.files.describeOutgoing()[0]!.compatible, 'log-v1');
  luo.registerFileHandler({ compatible: 'numbers-v1', canPreserve: (f) => typeof f === 'number', retrieve: () => null });
  luo.preserveFile(3, 0);
  assert.equal(luo.files.describeOutgoing()[1]!.compatible, 'numbers-v1', 'a specific handler registered after fd-v2 still wins');
});

test('an fd that is not open is EBADF at preserve', async () => {
  assert.equal(await code(() => mkLuo().preserveFile(1, 987654)), 'EBADF');
});

test('handlers: duplicate compatible EEXIST; missing retrieve EINVAL; unregister while files use it EBUSY; unknown ENOENT', async () => {
  const luo = mkLuo();
  const h = logger([]);
  luo.registerFileHandler(h);
  assert.equal(await code(() => luo.registerFileHandler({ ...h })), 'EEXIST');
  assert.equal(await code(() => luo.registerFileHandler({ compatible: 'bad-v1', canPreserve: () => true } as unknown as FileHandler)), 'EINVAL');
  luo.preserveFile(1, { id: 1 });
  assert.equal(await code(() => luo.unregisterFileHandler(h)), 'EBUSY');
  await luo.unpreserveFile(1);
  luo.unregisterFileHandler(h);
  assert.equal(await code(() => luo.unregisterFileHandler(h)), 'ENOENT');
});

test('files prepare, freeze and cancel in ascending token order, not insertion order', async () => {
  const log: string[] = [];
  const luo = mkLuo();
  luo.registerFileHandler(logger(log));
  for (const t of [30n, 2n, 0x100n, 1n]) luo.preserveFile(t, { id: Number(t) });
  await luo.prepare();
  await hooks(luo).freeze();
  await luo.cancel();
  assert.deepEqual(log, [
    'prepare 1', 'prepare 2', 'prepare 30', 'prepare 256',
    'freeze 1', 'freeze 2', 'freeze 30', 'freeze 256',
    'cancel 1 101', 'cancel 2 201', 'cancel 30 3001', 'cancel 256 25601',
  ]);
});

test('a file prepare failure cancels the files before it in token order; the failing one is not cancelled', async () => {
  const log: string[] = [];
  const luo = mkLuo();
  luo.registerFileHandler(logger(log, { token: 5n, phase: 'prepare' }));
  for (const t of [9n, 5n, 3n, 1n]) luo.preserveFile(t, { id: Number(t) });
  assert.equal(await code(() => luo.prepare()), 'ENOSPC');
  assert.deepEqual(log, ['prepare 1', 'prepare 3', 'prepare 5', 'cancel 1 100', 'cancel 3 300']);
  assert.equal(luo.state, State.NORMAL);
  for (const t of [1, 3, 5, 9]) assert.equal(luo.getFdState(t), State.NORMAL);
});

test('the files tree: "file-descriptors-v1", one node per token named as %#llx, with compatible, data and fds', async () => {
  const luo = mkLuo();
  luo.registerFileHandler(logger([]));
  luo.preserveFile(0n, { id: 0 });
  luo.preserveFile(42n, { id: 42 });
  const fd = fs.openSync('/dev/null', 'r');
  luo.preserveFile(0xdeadbeefn, fd);
  await luo.prepare();
  await hooks(luo).freeze();
  const luoTree = luo.kho.readFdt(luo.outgoingTreeAddress!);
  const filesAddr = Number(luoTree.lookup('/subsystems')!.u64('file-descriptors'));
  const files = luo.kho.readFdt(filesAddr).root;
  assert.equal(files.string('compatible'), 'file-descriptors-v1');
  assert.deepEqual([...files.children.keys()], ['0', '0x2a', '0xdeadbeef']);
  assert.equal(files.child('0x2a')!.string('compatible'), 'log-v1');
  assert.equal(files.child('0x2a')!.u64('data'), 4201n);
  assert.equal(files.child('0xdeadbeef')!.string('compatible'), 'fd-v2');
  const carried = files.child('0xdeadbeef')!.cells('fds')!;
  assert.equal(carried.length, 1);
  assert.equal(sys.fdTarget(carried[0]!), '/dev/null', 'the carried fd is luo\'s own reference to the file');
  assert.notEqual(carried[0], fd, 'a dup, not the caller\'s fd');
  assert.deepEqual(luo.files.carriedFds, carried);
});

test('unpreserve of a per-file PREPARED token cancels it first; unknown token ENOENT', async () => {
  const log: string[] = [];
  const luo = mkLuo();
  luo.registerFileHandler(logger(log));
  luo.preserveFile(7, { id: 7 });
  await luo.setFdEvent(7, 0);
  await luo.unpreserveFile(7);
  assert.deepEqual(log, ['prepare 7', 'cancel 7 700']);
  assert.equal(await code(() => luo.unpreserveFile(7)), 'ENOENT');
});

test('dropping all outgoing files (device close) cancels the prepared ones and leaves the global state alone', async () => {
  const log: string[] = [];
  const luo = mkLuo();
  luo.registerFileHandler(logger(log));
  luo.preserveFile(1, { id: 1 });
  luo.preserveFile(2, { id: 2 });
  await luo.setFdEvent(2, 0);
  assert.equal(await luo.files.unpreserveAll(), 2);
  assert.deepEqual(log, ['prepare 2', 'cancel 2 200']);
  assert.equal(luo.state, State.NORMAL);
  assert.deepEqual(luo.files.outgoingTokens, []);
});

test('early fds (successor mode): each fd a handler lets go early comes with a key object, else EINVAL; only PREPARED files are asked', async () => {
  const key = {};
  const mk = (compatible: string, refs: () => Array<{ fd: number; key: object }>): FileHandler<{ id: number }> => ({
    compatible,
    canPreserve: (f) => typeof f === 'object' && f !== null && (f as { kind?: string }).kind === compatible,
    early: () => refs(),
    retrieve: () => null,
  });
  const luo = mkLuo();
  luo.registerFileHandler(mk('early-v1', () => [{ fd: 1, key }, { fd: 2, key: {} }]) as FileHandler);
  luo.registerFileHandler(mk('keyless-v1', () => [{ fd: 3, key: null as unknown as object }]) as FileHandler);
  luo.preserveFile(7n, { kind: 'early-v1' });
  assert.deepEqual(await luo.files.earlyRefs(), [], 'nothing before PREPARE');
  await luo.prepare();
  const refs = await luo.files.earlyRefs();
  assert.deepEqual(refs.map((r) => r.fd), [1, 2]);
  assert.equal(refs[0]!.key, key);
  await luo.cancel();
  luo.preserveFile(8n, { kind: 'keyless-v1' });
  await luo.prepare();
  assert.equal(await code(() => luo.files.earlyRefs()), 'EINVAL');
  await luo.cancel();
});
