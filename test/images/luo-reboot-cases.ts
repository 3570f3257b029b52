/*
 * Reboot cases, chosen by LUO_CASE:
 *  freeze-timeout  a subsystem's freeze never returns: reboot must fail with ETIMEDOUT, the
 *                  exec must not happen, the image keeps running in NORMAL (prints JSON).
 *  tamper          PREPARE and FREEZE, then damage the "luo-v1" tree in the arena, then reboot: the next
 *                  image must refuse to boot (fatal).
 *  reclaimed       three tokens through a logging handler; the next image restores only one,
 *                  FINISHes and prints what each finish() got, and the memory left unclaimed.
 *  normal-reboot   reboot from NORMAL: the exec happens, the next image boots NORMAL.
 *  exec-fails      PREPARE, reboot into a missing program: error, back to NORMAL, files resumed.
 */
import { boot, Selftests, State, type FileHandler } from '../../src/index.js';

const CASE = process.env.LUO_CASE!;
const luo = boot({ arenaSize: 2 ** 28, timeouts: { freeze: 200 }, selftests: true });
const self = { file: process.execPath, argv: [process.execPath, process.argv[1]!] };
const log: string[] = [];
const handler: FileHandler<{ id: number }> = {
  compatible: 'rec-v1',
  canPreserve: (f) => typeof f === 'object' && f !== null && 'id' in f,
  prepare: ({ file }) => BigInt(file.id),
  cancel: ({ token }) => void log.push(`cancel ${token}`),
  retrieve: ({ data }) => ({ id: Number(data) }),
  finish: ({ token, file, data, reclaimed }) => void log.push(`finish ${token} data=${data} reclaimed=${reclaimed} file=${JSON.stringify(file)}`),
};
luo.registerFileHandler(handler);

if (luo.state === State.UPDATED) {
  if (CASE === 'reclaimed') {
    const got = await luo.restoreFile(2);
    const unclaimedBefore = luo.kho.unclaimed.reduce((n, r) => n + r.size, 0);
    await luo.finish();
    console.log(JSON.stringify({ state: 'updated', got, log, unclaimedBefore, unclaimedAfter: luo.kho.unclaimed.length }));
  }
} else if (process.env.LUO_GEN === '2') {
  console.log(JSON.stringify({ nextImage: luo.stateName, pid: process.pid }));
} else {
  const env = { ...process.env, LUO_GEN: '2' };
  if (CASE === 'freeze-timeout') {
    await luo.registerSubsystem({ name: 'stuck', freeze: () => new Promise(() => {}), cancel: () => void log.push('stuck cancel') });
    await luo.prepare();
    const err = await luo.reboot({ ...self, env }).catch((e) => e);
    console.log(JSON.stringify({ error: err.code, state: luo.stateName, kho: luo.kho.finalized, log, stillHere: true }));
    process.exit(0);
  }
  if (CASE === 'tamper') {
    await luo.prepare();
    await new Selftests(luo).freeze(); // FREEZE writes the tree: damage it afterwards
    const addr = luo.outgoingTreeAddress!;
    const blob = luo.kho.view(addr, 200);
    const at = Buffer.from(blob).indexOf('luo-v1');
    blob.set(Buffer.from('luo-v9'), at);
    await luo.reboot({ ...self, env });
  }
  if (CASE === 'reclaimed') {
    luo.allocPreserve(4096 * 4); // preserved, never restored by the next image
    for (const id of [1, 2, 3]) luo.preserveFile(id, { id: id * 10 });
    await luo.prepare();
    await luo.reboot({ ...self, env });
  }
  if (CASE === 'normal-reboot') {
    await luo.reboot({ ...self, env });
  }
  if (CASE === 'exec-fails') {
    luo.preserveFile(1, { id: 1 });
    await luo.prepare();
    const err = await luo.reboot({ file: '/nonexistent', argv: ['x'] }).catch((e) => e);
    console.log(JSON.stringify({ error: err.code, state: luo.stateName, fdState: luo.getFdState(1), kho: luo.kho.finalized, log }));
    process.exit(0);
  }
}
