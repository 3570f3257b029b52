/*
 * handlers/tls: the refusal of what cannot cross an update: a TLS socket or server (its
 * session keys live in this process's memory). Registered first, so no other handler takes
 * a TLS object; attach() refuses with the reason and what to do instead. No state.
 */
import { fail } from '../errors.js';
import type { FileHandler } from '../luo/file-handler.js';
import { tlsModule } from './builtins.js';
import { PreservedServer } from './server.js';

export const isTls = (f: unknown): boolean => {
  if (!f || typeof f !== 'object') return false;
  const tls = tlsModule();
  return f instanceof tls.TLSSocket || f instanceof tls.Server;
};

/** Claims TLS sockets and servers only to refuse them with a reason. */
export const tlsRefusal: FileHandler = {
  compatible: 'tls-refused',
  canPreserve: (f) => isTls(f) || (f instanceof PreservedServer && isTls(f.server)),
  attach() {
    throw fail('EOPNOTSUPP', 'TLS connections cannot be handed over: the session keys live in this process\'s memory. Terminate TLS in front of the service, or let TLS clients reconnect');
  },
  retrieve() {
    throw fail('EOPNOTSUPP', 'TLS cannot be restored');
  },
};
