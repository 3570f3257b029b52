/*
 * handlers/tls: the refusal of what cannot cross an update: a TLS socket or server (its
 * session keys live in this process's memory). Registered first, so no other handler takes
 * a TLS object; attach() refuses with the reason and what to do instead. No state.
 */
import net from 'node:net';
import { fail } from '../errors.js';
import type { FileHandler } from '../luo/file-handler.js';
import { PreservedServer } from './server.js';

/**
 * A TLS socket or server, told by what node:tls documents for it: a TLSSocket's `encrypted`
 * is always true ("may be used to distinguish TLS sockets from regular net.Socket
 * instances"), and a tls.Server (https, http2's secure server) has addContext(). Neither
 * needs node:tls loaded: loading it took ~3 ms, once, in a successor's first moments of
 * serving (its first preserveServer), in a service that never used TLS.
 */
export const isTls = (f: unknown): boolean => {
  if (f instanceof net.Socket) return (f as { encrypted?: unknown }).encrypted === true;
  if (f instanceof net.Server) return typeof (f as { addContext?: unknown }).addContext === 'function';
  return false;
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
