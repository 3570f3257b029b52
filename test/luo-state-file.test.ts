// The state file (/sys/kernel/liveupdate/state): one word and a newline per state, replaced
// atomically, read-only, watchable.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { imagePath, jsonLines, runNode, tmpDir } from './helpers.js';
import { hooks, mkLuo } from './luo-helpers.js';
import { StateFile } from '../src/luo/statefile.js';

const read = (f: string | null): string => fs.readFileSync(f!, 'utf8');

test('holds normal, prepared, frozen, normal, updated (each with a newline) as the state changes', async () => {
  const luo = mkLuo();
  assert.equal(read(luo.stateFilePath), 'normal\n');
  await luo.prepare();
  assert.equal(read(luo.stateFilePath), 'prepared\n');
  await hooks(luo).freeze();
  assert.equal(read(luo.stateFilePath), 'frozen\n');
  await luo.cancel();
  assert.equal(read(luo.stateFilePath), 'normal\n');
  const probe = await runNode(imagePath('luo-updated-probe'), [], { env: { ...process.env, LUO_RUNDIR: tmpDir() } });
  assert.equal(jsonLines(probe.stdout)[0]!.stateFile, 'updated\n');
});

test('is read-only (0444) in a 0700 runtime directory, and luo offers no way to write it', async () => {
  const luo = mkLuo();
  assert.equal(fs.statSync(luo.stateFilePath!).mode & 0o777, 0o444);
  assert.equal(fs.statSync(path.dirname(luo.stateFilePath!)).mode & 0o777, 0o700);
  assert.equal(Object.getOwnPropertyDescriptor(Object.getPrototypeOf(luo), 'stateName')?.set, undefined);
});

test('is replaced atomically: a reader in another process never sees a partial or empty file', async () => {
  const luo = mkLuo();
  const reader = runNode(imagePath('state-reader'), [luo.stateFilePath!, '1500']);
  const end = Date.now() + 1400;
  let cycles = 0;
  while (Date.now() < end) {
    await luo.prepare();
    await luo.cancel();
    cycles++;
  }
  const out = jsonLines((await reader).stdout)[0]!;
  assert.equal(out.errors, 0, 'the file never disappears');
  assert.deepEqual(Object.keys(out.seen as object).sort(), ['normal\n', 'prepared\n'], `after ${cycles} cycles`);
  assert.deepEqual(fs.readdirSync(path.dirname(luo.stateFilePath!)), ['pid', 'state'], 'no temporary files left (the state and the pid of who serves)');
});

test('can be watched: fs.watch on the runtime directory reports every change', async () => {
  const luo = mkLuo();
  const dir = path.dirname(luo.stateFilePath!);
  const changes: string[] = [];
  const w = fs.watch(dir, (_ev, name) => {
    if (name === 'state') changes.push(read(luo.stateFilePath));
  });
  await new Promise((r) => setTimeout(r, 50));
  await luo.prepare();
  await new Promise((r) => setTimeout(r, 100));
  await luo.cancel();
  await new Promise((r) => setTimeout(r, 100));
  w.close();
  assert.ok(changes.includes('prepared\n') && changes.at(-1) === 'normal\n', JSON.stringify(changes));
});

test('a successor writes its first state off the main thread; later writes queue behind it and never overtake it', async () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'state'), 'frozen\n', { mode: 0o444 }); // the previous image's
  const f = StateFile.open(dir, 'updated', { deferred: true });
  assert.equal(read(f.path), 'frozen\n', 'not written yet: the main thread went on');
  f.write('normal'); // FINISH, while the first write is still in flight
  await f.idle();
  assert.equal(read(f.path), 'normal\n');
  assert.deepEqual(fs.readdirSync(dir), ['pid', 'state'], 'no temporary files left (the state and the pid of who serves)');
  f.write('prepared'); // nothing pending: written at once
  assert.equal(read(f.path), 'prepared\n');
  f.close();
  assert.deepEqual(fs.readdirSync(dir), []);
});
