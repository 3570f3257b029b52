/*
 * A successor for protocol tests, started by Successor.start (its link on fd 3).
 *   SUCCESSOR_PEER=v1   an image from before presend-v1: says hello without "accepts", takes
 *                       handover-v1 as it was, answers "taken", prints what it got
 *   SUCCESSOR_PEER=v2   luo's own receiveHandover; prints the map it built, which fds sent
 *                       early it closed again, and the regions it was asked to read ahead
 * Both also say in which scheduling classes its threads were when it said hello, and when it
 * had taken the handover (/proc/self/task/<tid>/stat, field 41: 0 normal, 5 SCHED_IDLE).
 * Each fd it receives is identified by its inode, so the test can check it is the same file.
 * The report (JSON) goes to the file SUCCESSOR_PEER_OUT (its stdout is the test runner's).
 */
import fs from 'node:fs';
import { receiveHandover } from '../../src/handover/successor.js';
import * as sys from '../../src/sys/index.js';

/** The report, whole or not at all (written aside, then renamed: the test reads it as soon as
 *  the file exists). */
const say = (o: unknown): void => {
  const out = process.env.SUCCESSOR_PEER_OUT!;
  fs.writeFileSync(`${out}.part`, JSON.stringify(o));
  fs.renameSync(`${out}.part`, out);
};
const ino = (fd: number): number => sys.fstat(fd).ino;
/** The scheduling classes of this process's threads, each once, ascending. */
const policies = (): number[] => [...new Set(fs.readdirSync('/proc/self/task').map((t) => {
  try {
    return Number(fs.readFileSync(`/proc/self/task/${t}/stat`, 'latin1').split(') ')[1]!.split(' ')[38]);
  } catch {
    return -1;
  }
}).filter((p) => p >= 0))].sort();

if (process.env.SUCCESSOR_PEER === 'v1') {
  const atHello = policies();
  sys.sendPacket(3, Buffer.from(JSON.stringify({ luo: 'successor-v1', pid: process.pid })));
  const head = JSON.parse(sys.recvPacket(3)!.data.toString()) as { luo: string; fds: number[]; chunks: number; entry: string };
  const got: number[] = [];
  for (let i = 0; i < head.chunks; i++) got.push(...sys.recvPacket(3)!.fds);
  sys.sendPacket(3, Buffer.from(JSON.stringify({ taken: got.length })));
  say({ luo: head.luo, entry: head.entry, map: head.fds.map((old, i) => [old, ino(got[i]!)]), policies: { atHello, atHandover: policies() } });
} else {
  const early: number[] = [];
  const ahead: Array<[number, number]> = [];
  let atHello: number[] = [];
  const r = receiveHandover(3, {
    beforeHello: () => void (atHello = policies()),
    presend: ({ arena, fds }) => void early.push(...(arena >= 0 ? [arena] : []), ...fds),
    // Read the first region only (as a successor that could not read the others would).
    ahead: (regions) => (ahead.push(...regions), Math.min(1, regions.length)),
  });
  const map: Array<[number, number]> = [];
  r.fdMap.forEach((n, old) => n >= 0 && map.push([old, ino(n)]));
  say({ entry: r.entry, map, early: early.length, closedEarly: r.closedEarly.length, closedEarlyStillOpen: r.closedEarly.filter(sys.isOpen).length, ahead, policies: { atHello, atHandover: policies() } });
}
