/*
 * A successor on test/images/successor-peer, for the tests of the handover link: 'v1' is an
 * image from before presend-v1, 'v2' luo's own receiveHandover. It writes what it was handed
 * (the map of old fd numbers to the inodes it got, the early copies it closed) to a file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Successor, type SuccessorOptions } from '../src/handover/successor.js';
import * as sys from '../src/sys/index.js';
import { imagePath, tmpDir } from './helpers.js';

export const ino = (fd: number): number => sys.fstat(fd).ino;

/** `n` fresh files, open for writing. */
export function files(n: number): number[] {
  const dir = tmpDir();
  return Array.from({ length: n }, (_, i) => fs.openSync(path.join(dir, `f${i}`), 'w'));
}

export function peer(kind: 'v1' | 'v2', opts: SuccessorOptions = {}): { next: Successor; report: () => Promise<Record<string, any>> } {
  const out = path.join(tmpDir(), 'report.json');
  const next = Successor.start({ file: process.execPath, argv: [process.execPath, imagePath('successor-peer')], env: { ...process.env, SUCCESSOR_PEER: kind, SUCCESSOR_PEER_OUT: out } }, opts);
  const report = async (): Promise<Record<string, any>> => {
    for (let i = 0; i < 500 && !fs.existsSync(out); i++) await new Promise((r) => setTimeout(r, 10));
    return JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, any>;
  };
  return { next, report };
}
