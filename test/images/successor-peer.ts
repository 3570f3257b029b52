/*
 * A successor for protocol tests, started by Successor.start (its link on fd 3).
 *   SUCCESSOR_PEER=v1   an image from before presend-v1: says hello without "accepts", takes
 *                       handover-v1 as it was, answers "taken", prints what it got
 *   SUCCESSOR_PEER=v2   luo's own receiveHandover; prints the map it built and which fds
 *                       sent early it closed again
 * Each fd it receives is identified by its inode, so the test can check it is the same file.
 * The report (JSON) goes to the file SUCCESSOR_PEER_OUT (its stdout is the test runner's).
 */
import fs from 'node:fs';
import { receiveHandover } from '../../src/handover/successor.js';
import * as sys from '../../src/sys/index.js';

const say = (o: unknown): void => fs.writeFileSync(process.env.SUCCESSOR_PEER_OUT!, JSON.stringify(o));
const ino = (fd: number): number => sys.fstat(fd).ino;

if (process.env.SUCCESSOR_PEER === 'v1') {
  sys.sendPacket(3, Buffer.from(JSON.stringify({ luo: 'successor-v1', pid: process.pid })));
  const head = JSON.parse(sys.recvPacket(3)!.data.toString()) as { luo: string; fds: number[]; chunks: number; entry: string };
  const got: number[] = [];
  for (let i = 0; i < head.chunks; i++) got.push(...sys.recvPacket(3)!.fds);
  sys.sendPacket(3, Buffer.from(JSON.stringify({ taken: got.length })));
  say({ luo: head.luo, entry: head.entry, map: head.fds.map((old, i) => [old, ino(got[i]!)]) });
} else {
  const early: number[] = [];
  const r = receiveHandover(3, { presend: ({ arena, fds }) => void early.push(...(arena >= 0 ? [arena] : []), ...fds) });
  const map: Array<[number, number]> = [];
  r.fdMap.forEach((n, old) => n >= 0 && map.push([old, ino(n)]));
  say({ entry: r.entry, map, early: early.length, closedEarly: r.closedEarly.length, closedEarlyStillOpen: r.closedEarly.filter(sys.isOpen).length });
}
