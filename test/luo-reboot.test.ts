// The reboot hook (reference §2.3) and FINISH on a real exec: a FREEZE that times out stops the
// exec; a tampered "luo-v1" tree is fatal at boot; FINISH tells handlers which tokens were
// never restored; rebooting from NORMAL hands nothing over; a failed exec cancels cleanly.
import assert from 'node:assert/strict';
import test from 'node:test';
import { EXIT_PANIC } from '../src/index.js';
import { imagePath, jsonLines, runNode, tmpDir } from './helpers.js';

const run = (c: string) => runNode(imagePath('luo-reboot-cases'), [], { env: { ...process.env, LUO_CASE: c, LUO_RUNDIR: tmpDir() } });

test('a freeze callback that times out at reboot: ETIMEDOUT, no exec, the service keeps running in NORMAL', async () => {
  const r = await run('freeze-timeout');
  assert.equal(r.code, 0, r.stderr);
  const [out] = jsonLines(r.stdout);
  assert.deepEqual(out, { error: 'ETIMEDOUT', state: 'normal', kho: false, log: ['stuck cancel'], stillHere: true });
});

test('an image booting from a handover whose "luo-v1" tree was tampered with refuses to boot (and its guard does not bring back a previous image that could not boot from it either)', async () => {
  const r = await run('tamper');
  assert.equal(r.code, EXIT_PANIC);
  assert.equal(r.stderr, 'luo: fatal: ERR_HANDOVER: LUO tree: compatible is ["luo-v9"], expected "luo-v1"\n'
    + 'luo: cannot bring the previous version back: the handover is damaged: the LUO tree is ["luo-v9"], not "luo-v1"\n');
});

test('FINISH calls finish(reclaimed=false, file=null) for every token never restored, and releases unclaimed memory', async () => {
  const r = await run('reclaimed');
  assert.equal(r.code, 0, r.stderr);
  const [out] = jsonLines(r.stdout) as [Record<string, any>];
  assert.deepEqual(out.got, { id: 20 });
  assert.deepEqual(out.log, [
    'finish 1 data=10 reclaimed=false file=null',
    'finish 2 data=20 reclaimed=true file={"id":20}',
    'finish 3 data=30 reclaimed=false file=null',
  ]);
  assert.ok(out.unclaimedBefore >= 4096 * 4, 'the scratch pages were handed over');
  assert.equal(out.unclaimedAfter, 0);
  assert.match(r.stderr, /FINISH released \d+ bytes of handed-over memory that no subsystem restored/);
});

test('rebooting from NORMAL execs without a LUO tree: the next image boots NORMAL', async () => {
  const r = await run('normal-reboot');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(jsonLines(r.stdout)[0]!.nextImage, 'normal');
});

test('a failed exec after FREEZE cancels back to NORMAL and returns the exec error', async () => {
  const r = await run('exec-fails');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(jsonLines(r.stdout)[0], { error: 'ENOENT', state: 'normal', fdState: 1, kho: false, log: ['cancel 1'] });
});
