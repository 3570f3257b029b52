/*
 * handover/rollback: what a guard does when the image it guards fails before FINISH (bundled
 * on its own as dist/bundle/rollback.cjs and loaded only then: a guard costs the pause
 * nothing of this).
 *
 * In place (rollbackInPlace): the previous image left its command line in the LUO tree
 * ("previous-image") and the arena still holds exactly what it handed over (the next image
 * mapped it copy-on-write). Read the handover as the previous image wrote it, clear
 * close-on-exec on stdio, the arena and every fd the files tree carries, and exec the previous
 * image again with the same LUO_HANDOVER and LUO_ROLLBACK saying why: it boots UPDATED and
 * restores everything (its connection handlers close the connections the failed image
 * touched). Returns only when that is impossible (the handover is unreadable, the exec
 * failed): the caller then lets the process end, with its reason on stderr.
 * Successor (reportToPrevious): tell the previous image why, over the link; it resumes once
 * this process is gone.
 */
import fs from 'node:fs';
import { decode, readHeader, type Fdt } from '../fdt/index.js';
import { FILES_SUBSYSTEM, LUO_COMPATIBLE, LUO_SUBTREE, PREVIOUS_IMAGE_NODE, SUBSYSTEMS_NODE } from '../uapi/trees.js';
import { fdtChecksum } from '../kho/kho.js';
import * as sys from '../sys/index.js';
import { HANDOVER_ENV, ROLLBACK_ENV, parseKhoEntry, type Failure } from '../uapi/handover.js';

export interface PreviousImage { file: string; argv: string[]; env: string[]; cwd: string; fds: number[]; nofile: number[] | null }

/** The previous image and the fds it carried, read from the handover `entry` names. Throws a
 *  plain Error naming what is missing. */
export function previousImage(entry: string): PreviousImage {
  const e = parseKhoEntry(entry);
  const size = sys.fstat(e.arenaFd).size;
  const map = sys.Mapping.map(e.arenaFd, size, 0, { private: true });
  try {
    const tree = (addr: number): Fdt => decode(map.bytes(addr, readHeader(map.bytes(addr, 40), true).totalsize));
    const root = decode(map.bytes(e.rootAddr, e.rootSize)).root;
    const node = root.child(LUO_SUBTREE);
    const luoAddr = node?.u64('fdt');
    if (luoAddr === undefined) throw new Error('the handover has no LUO tree');
    const luo = tree(Number(luoAddr)).root;
    // What the previous image could not boot from either: say so rather than exec it to die.
    if (!luo.isCompatible(LUO_COMPATIBLE)) throw new Error(`the handover is damaged: the LUO tree is ${JSON.stringify(luo.stringList('compatible') ?? null)}, not "${LUO_COMPATIBLE}"`);
    const sum = node!.cells('checksum');
    const blob = map.bytes(Number(luoAddr), readHeader(map.bytes(Number(luoAddr), 40), true).totalsize);
    if (sum?.length === 1 && fdtChecksum(blob) !== sum[0]) throw new Error('the handover is damaged: the LUO tree changed after it was written');
    const prev = luo.child(PREVIOUS_IMAGE_NODE);
    if (!prev) throw new Error('the LUO tree does not name the previous image');
    const fds = [0, 1, 2, e.arenaFd];
    const filesAddr = luo.child(SUBSYSTEMS_NODE)?.u64(FILES_SUBSYSTEM);
    if (filesAddr) for (const n of tree(Number(filesAddr)).root.children.values()) fds.push(...(n.cells('fds') ?? []));
    return { file: prev.string('file')!, argv: prev.stringList('argv')!, env: prev.props.has('env') ? prev.stringList('env')! : [], cwd: prev.string('cwd') ?? '/', fds, nofile: prev.cells('nofile') ?? null };
  } finally {
    map.unmap();
  }
}

/** End the process now (_exit), with `status`: a failed next image whose previous version
 *  could not be brought back, from the guard's exit handler. Node's own exit-time cleanup
 *  there (with the guard's watchdog thread) hung now and then on Node 24, the process never
 *  gone; what it had to say is written already (stderr is written synchronously). */
export function exitNow(status: number): never {
  return sys.exitNow(status);
}

/** Exec the previous image in place with the same handover. Returns only if it could not. */
export function rollbackInPlace(entry: string, failure: Failure): void {
  let prev: PreviousImage;
  try {
    prev = previousImage(entry);
  } catch (err) {
    say(`luo: cannot bring the previous version back: ${(err as Error).message}`);
    return;
  }
  for (const fd of prev.fds) {
    try {
      sys.setCloexec(fd, false);
    } catch { /* closed by the failed image: its connection is lost, and counted as touched */ }
  }
  // The previous image's fd limit (a wrapper of the failed one may have lowered it): back as
  // far as this process may raise it. Too low to hold what it carried: it could not boot
  // either (raising a hard limit takes CAP_SYS_RESOURCE).
  if (prev.nofile?.length === 2) {
    try {
      sys.setFdLimit(prev.nofile[0]!, prev.nofile[1]!);
    } catch {
      try {
        sys.setFdLimit(Math.min(prev.nofile[0]!, sys.fdLimit().hard));
      } catch { /* as it is */ }
    }
    const { hard } = sys.fdLimit();
    const highest = Math.max(...prev.fds);
    if (highest + 64 >= hard) {
      say(`luo: cannot bring the previous version back: this process's fd limit is ${hard} now (the failed version's wrapper lowered it) and cannot be raised back to ${prev.nofile[1]} (that takes CAP_SYS_RESOURCE), too low for the ${prev.fds.length} fds it carried`);
      return;
    }
  }
  const env = prev.env.filter((kv) => !kv.startsWith(`${HANDOVER_ENV}=`) && !kv.startsWith(`${ROLLBACK_ENV}=`));
  env.push(`${HANDOVER_ENV}=${entry}`, `${ROLLBACK_ENV}=${JSON.stringify({ reason: failure.reason, status: failure.status, stderr: failure.stderr })}`);
  try {
    process.chdir(prev.cwd);
  } catch { /* the previous image's directory is gone: exec from here */ }
  say(`luo: ${failure.reason}; bringing the previous version back (pid ${process.pid})`);
  try {
    sys.execveRaw(prev.file, prev.argv, env);
  } catch (err) {
    say(`luo: exec of the previous version failed: ${(err as Error).message}`);
  }
}

export { reportFailure as reportToPrevious } from './successor.js';

function say(line: string): void {
  try {
    fs.writeSync(2, `${line}\n`);
  } catch { /* stderr closed */ }
}
