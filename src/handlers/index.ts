/*
 * handlers: one file per kind of file luo can carry across an update. builtinHandlers() is
 * what boot() registers, most specific first; the generic fd handler is a fallback, asked
 * after every other handler (including ones the application registers later). Handlers see
 * only their narrow context (luo/file-handler.ts), never Luo.
 */
import type { FileHandler } from '../luo/file-handler.js';
import { fdHandler } from './fd.js';
import { memfdHandler } from './memfd.js';
import { serverHandler } from './server.js';
import { listenerHandler, socketHandler } from './socket.js';
import { tlsRefusal } from './tls.js';
import { udpHandler } from './udp.js';

export { fdHandler, type FdFile } from './fd.js';
export { Memfd, memfdHandler, isMemfd } from './memfd.js';
export { socketHandler, listenerHandler } from './socket.js';
export { tlsRefusal } from './tls.js';
export { serverHandler, connectionsOf, PreservedServer, type ServerOptions, type RestoredServer } from './server.js';
export { udpHandler } from './udp.js';
export type { ConnectionOptions, OnUndrained } from './connection.js';

export function builtinHandlers(): FileHandler[] {
  return [tlsRefusal, serverHandler, socketHandler(), listenerHandler, udpHandler, memfdHandler, fdHandler].map((h) => h as FileHandler);
}
