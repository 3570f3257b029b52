/*
 * handover/image: the next program image (what to run), and the check that it can be run at
 * all, made before the point of no return by both transports. No state.
 */
import fs from 'node:fs';
import { SysError } from '../errors.js';

/** The next program image. argv[0] is the program name as the new image will see it. */
export interface Image {
  file: string;
  argv: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** This process's own command line: Node and its arguments (re-read from disk at exec). */
export function selfImage(): Image {
  return { file: process.execPath, argv: [process.argv0 || process.execPath, ...process.execArgv, ...process.argv.slice(1)], cwd: process.cwd() };
}

/** The program execve will run: `file` itself if it has a slash, else the first executable
 *  match on PATH (as execvp). SysError ENOENT/EACCES when there is none. */
export function resolveExecutable(file: string, pathVar = process.env.PATH ?? '/usr/bin:/bin'): string {
  const candidates = file.includes('/') ? [file] : pathVar.split(':').filter(Boolean).map((d) => `${d}/${file}`);
  let errno = 2; // ENOENT
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (fs.statSync(c).isFile()) return c;
      errno = 13;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EACCES') errno = 13;
    }
  }
  throw new SysError('execve', errno, file);
}
