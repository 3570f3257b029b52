/*
 * panic: the kernel's panic() for a process: a one-line reason on stderr, then exit with
 * EXIT_PANIC. For a handover that is corrupt or incompatible (the kernel panics there too),
 * never for anything a caller can handle. A guard (a next version's) is told the reason first.
 * Never returns.
 */
import fs from 'node:fs';
import { guardOf } from './uapi/handover.js';

/** Exit status of a fatal boot error (EX_SOFTWARE). */
export const EXIT_PANIC = 70;

export function panic(reason: string): never {
  // A next version under luo's guard: the previous one hears why this one could not boot.
  guardOf()?.note(`could not boot: ${reason}`);
  try {
    fs.writeSync(2, `luo: fatal: ${reason}\n`);
  } catch { /* stderr closed */ }
  process.exit(EXIT_PANIC);
}
