/*
 * handlers: one file per kind of file luo can carry across an update. builtinHandlers() is
 * what boot() registers; the generic fd handler is a fallback, asked after specific ones.
 */
import type { FileHandler } from '../luo/files.js';
import { fdHandler } from './fd.js';

export { fdHandler, type FdFile } from './fd.js';

export function builtinHandlers(): FileHandler[] {
  return [fdHandler as FileHandler];
}
