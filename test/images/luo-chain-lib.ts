/*
 * Shared body of the luo-chain images (three scripts, one per "version"). Each generation:
 * boots; if UPDATED, restores what the previous one preserved (a memfd and a pipe through the
 * fd handler, a subsystem's preserved memory) and checks it, then FINISHes; then preserves
 * fresh ones, PREPAREs and reboots into the next script, until CHAIN_LEFT reaches 0.
 * One JSON line per generation.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { boot, State, type Memfd, type Subsystem } from '../../src/index.js';
import * as sys from '../../src/sys/index.js';
import { checkPattern, fillPattern } from '../../src/util/pattern.js';

export async function runGeneration(version: number): Promise<void> {
  const luo = boot({ arenaSize: 2 ** 30 });
  const left = Number(process.env.CHAIN_LEFT ?? '3');
  const report: Record<string, unknown> = { version, pid: process.pid, state: luo.stateName, number: luo.liveupdateNumber };

  let booted: bigint | null = null;
  const cache: Subsystem = {
    name: 'cache',
    prepare() {
      const addr = luo.allocPreserve(3 * 4096);
      fillPattern(luo.view(addr, 3 * 4096), addr, 1000 + version);
      return addr;
    },
    boot(data) {
      booted = data;
    },
    finish() {},
  };
  await luo.registerSubsystem(cache);

  if (luo.state === State.UPDATED) {
    const prev = version === 1 ? 3 : version - 1;
    const addr = Number(booted);
    luo.restoreMemory(addr);
    report.memoryIntact = checkPattern(luo.view(addr, 3 * 4096), addr, 1000 + prev) === -1;
    const memfd = await luo.restoreFile<Memfd>(10);
    const buf = Buffer.alloc(64);
    const n = memfd.read(buf, 0);
    report.memfdText = buf.subarray(0, n).toString();
    report.memfdCloexec = sys.isCloexec(memfd.fd);
    const atPos = Buffer.alloc(64);
    report.memfdAtPosition = atPos.subarray(0, fs.readSync(memfd.fd, atPos, 0, 64, null)).toString(); // from the carried offset
    const rd = await luo.restoreFile<number>(11);
    const pbuf = Buffer.alloc(64);
    const pn = fs.readSync(rd, pbuf, 0, 64, null);
    report.pipeText = pbuf.subarray(0, pn).toString();
    report.incomingTokens = luo.files.incomingTokens.map(String);
    try {
      await luo.restoreFile(10);
    } catch (e) {
      report.secondRestore = (e as { code: string }).code;
    }
    memfd.close();
    fs.closeSync(rd);
    await luo.finish();
    luo.kho.free(addr, 3 * 4096);
    report.afterFinish = luo.stateName;
    // fds a live update could leak; files Node's own runtime opens (Node 24 reads its CA store
    // from /etc at start-up, sometimes) are not luo's and are left out.
    const targets = sys.openFds().map((fd) => {
      try {
        return `${fd} ${sys.fdTarget(fd)}`;
      } catch {
        return `${fd} ?`;
      }
    }).filter((t) => !t.includes(' /etc/'));
    report.openFds = targets.length;
    report.fdTargets = targets;
  }
  console.log(JSON.stringify(report));
  if (left <= 0) return;

  const memfd = sys.memfdCreate('chain');
  fs.writeSync(memfd, `hello from version ${version}`, 0);
  fs.readSync(memfd, Buffer.alloc(6), 0, 6, null); // the file offset is now 6: it must survive
  luo.preserveFile(10, memfd);
  sys.close(memfd); // luo holds its own reference
  const [rd, wr] = pipe();
  fs.writeSync(wr, `pipe from version ${version}`);
  luo.preserveFile(11n, rd);
  luo.preserveFile(12n, { fd: wr }); // preserved, never restored: FINISH gets reclaimed=false
  await luo.prepare();
  const next = path.join(path.dirname(fileURLToPath(import.meta.url)), `luo-chain-${(version % 3) + 1}.js`);
  await luo.reboot({ file: process.execPath, argv: [process.execPath, next], env: { ...process.env, CHAIN_LEFT: String(left - 1) } });
}

/** Node has no pipe(2); a FIFO in a temporary directory gives the same two ends. */
function pipe(): [number, number] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luo-chain-'));
  const fifo = path.join(dir, 'p');
  if (spawnSync('mkfifo', [fifo]).status !== 0) throw new Error('mkfifo failed');
  const rd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const wr = fs.openSync(fifo, fs.constants.O_WRONLY);
  fs.rmSync(dir, { recursive: true });
  return [rd, wr];
}
