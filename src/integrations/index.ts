/*
 * integrations: luo as services use it: whole servers across an update (server.ts). Built
 * on Luo's public API and the file handlers; nothing below imports from here.
 */
export { preserveServer, restoreServer, type RestoreOptions } from './server.js';
