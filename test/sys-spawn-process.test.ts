// sys.spawnProcess (posix_spawn, the successor's start): the child gets stdin, stdout and
// stderr (even though this Node opened them close-on-exec) and the fds asked for at their
// numbers, and nothing else of this process; every standard signal at its default, none blocked
// (Node ignores SIGPIPE: the child must not); its argv[0], environment and working directory
// as given; an error (ENOENT) when the program cannot be run; and only waitpid reaps it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import * as sys from '../src/sys/index.js';
import { tmpDir } from './helpers.js';

/** Wait (without blocking the loop for long) until `pid` has exited; its status. */
async function exited(pid: number): Promise<sys.WaitResult> {
  for (let i = 0; i < 1000; i++) {
    const w = sys.waitpid(pid, sys.WNOHANG);
    if (w.pid === pid) return w;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`pid ${pid} did not exit`);
}

test('a spawned child has stdio, the fds asked for and nothing else; default signals; its argv, env and cwd', async () => {
  const dir = tmpDir();
  const out = path.join(dir, 'out');
  const [a, b] = sys.seqpacketPair();
  const extra = fs.openSync(path.join(dir, 'not-inherited'), 'w'); // close-on-exec, as Node opens it
  try {
    const script = [
      `ls /proc/self/fd > ${out}.fds`,
      `grep -E '^Sig(Blk|Ign):' /proc/self/status > ${out}.sig`,
      `echo "$0|$LUO_SPAWN_TEST|$(pwd)" > ${out}.who`,
      'echo hi >&3',
    ].join('; ');
    // What this process leaves inheritable (not close-on-exec) goes to any child it starts,
    // as with exec: here, whatever the test runner gave it. Nothing else may.
    const inheritable = sys.openFds().filter((fd) => {
      try {
        return fd > 2 && fd !== b && !sys.isCloexec(fd);
      } catch {
        return false; // the directory fd openFds read /proc/self/fd with
      }
    });
    const pid = sys.spawnProcess('/bin/sh', { argv: ['successor-name', '-c', script], env: { PATH: process.env.PATH, LUO_SPAWN_TEST: 'yes' }, cwd: dir, fds: [[b, 3]] });
    const w = await exited(pid);
    assert.equal(w.code, 0);
    // ls's own fd for the directory it reads is one more; 0-3 and nothing of ours.
    const fds = fs.readFileSync(`${out}.fds`, 'utf8').trim().split(/\s+/).map(Number).sort((x, y) => x - y);
    assert.deepEqual(fds.filter((fd) => fd <= 3), [0, 1, 2, 3]);
    const rest = fds.filter((fd) => fd > 3 && !inheritable.includes(fd));
    assert.ok(rest.length <= 1, `only stdio, fd 3, what was inheritable and ls's own: ${fds.join(',')} (inheritable: ${inheritable.join(',')})`);
    assert.ok(!fds.includes(extra) || inheritable.includes(extra), 'a close-on-exec fd of this process does not reach it');
    const sig = fs.readFileSync(`${out}.sig`, 'utf8');
    assert.match(sig, /SigBlk:\s+0+\n/, 'nothing blocked');
    // Signals 1-31 (glibc keeps its own two real-time signals, which a program's libc sets up
    // again as it starts).
    const ign = BigInt(`0x${/SigIgn:\s+([0-9a-f]+)/.exec(sig)![1]}`);
    assert.equal(ign & 0x7fffffffn, 0n, 'no standard signal ignored (Node ignores SIGPIPE; the child must not)');
    assert.equal(fs.readFileSync(`${out}.who`, 'utf8').trim(), `successor-name|yes|${fs.realpathSync(dir)}`);
    assert.equal(sys.recvPacket(a)!.data.toString(), 'hi\n', 'fd 3 is the end of the pair it was given');
  } finally {
    sys.close(a);
    sys.close(b);
    fs.closeSync(extra);
  }
});

test('a program that cannot be run is refused at once, with its errno', () => {
  assert.throws(() => sys.spawnProcess('/nonexistent/program', { argv: ['x'], env: {} }), { code: 'ENOENT' });
  assert.throws(() => sys.spawnProcess('/etc', { argv: ['x'], env: {} }), { code: 'EACCES' });
});

test('Node does not reap a spawned child: its exit stays for waitpid, with its status', async () => {
  const pid = sys.spawnProcess('/bin/sh', { argv: ['sh', '-c', 'exit 7'], env: {} });
  await new Promise((r) => setTimeout(r, 200));
  const w = await exited(pid);
  assert.equal(w.code, 7);
  assert.throws(() => sys.waitpid(pid, sys.WNOHANG), { code: 'ECHILD' }, 'reaped once');
});
