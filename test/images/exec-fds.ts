/*
 * Test image for what an exec carries. Phase 1 (no argument): opens fds, registers one,
 * starts a child that exits at once and one that sleeps briefly (so they are inherited),
 * tries an exec of a missing program (must fail cleanly, flags restored), then execs itself
 * with "phase2". Phase 2 reports which fds it has and the zombies it reaped.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { bootKho, childPids, kexec } from '../../src/handover/kho.js';
import * as sys from '../../src/sys/index.js';

const kho = bootKho({ arenaSize: 2 ** 30 });
if (process.argv[2] !== 'phase2') {
  const kept = sys.memfdCreate('kept');
  const dropped = sys.memfdCreate('dropped', 0); // opened without CLOEXEC: luo must set it
  const quick = spawn('true', { stdio: 'ignore' });
  const slow = spawn('sleep', ['0.6'], { stdio: 'ignore' });
  kho.finalize();
  setTimeout(() => {
    let failed = '';
    try {
      kexec(kho, { file: '/nonexistent/node', argv: ['x'] }, { keepFds: [kept] });
    } catch (e) {
      failed = (e as { code: string }).code;
    }
    const report = { pid: process.pid, kept, dropped, failed, droppedCloexecAfterFailure: sys.isCloexec(dropped), keptCloexecAfterFailure: sys.isCloexec(kept), children: [quick.pid, slow.pid] };
    console.log(JSON.stringify(report));
    kexec(kho, { file: process.execPath, argv: [process.execPath, process.argv[1]!, 'phase2'] }, { keepFds: [kept] });
  }, 100);
} else {
  const fds = sys.openFds().map((fd) => {
    try {
      return [fd, sys.fdTarget(fd)];
    } catch {
      return [fd, '?']; // the directory handle readdir used, closed already
    }
  }).filter(([, t]) => t !== '?');
  const before = childPids();
  setTimeout(() => {
    const zombies = childPids().filter((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
      } catch {
        return false;
      }
    });
    console.log(JSON.stringify({ pid: process.pid, fds, bootedFrom: kho.bootedFrom, inheritedChildren: before, childrenLeft: childPids(), zombies }));
  }, 1200);
}
