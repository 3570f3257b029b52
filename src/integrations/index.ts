/*
 * integrations: luo as services use it: whole servers across an update (server.ts), socket.io
 * sessions (socketio.ts). Built on Luo's public API and the file handlers; nothing below
 * imports from here.
 */
export { preserveServer, restoreServer, isCarried, type RestoreOptions, type RestoredCounts } from './server.js';
export { carrySocketIo } from './socketio.js';
