/*
 * handlers/socket: one established TCP or Unix connection (a net.Socket) per token
 * ("socket-v1"), a listening net.Server without its connections ("listener-v1"), and the
 * refusal of what cannot cross an exec (TLS).
 *
 * socket-v1 follows connection.ts: stop reading and drain at FREEZE, snapshot the carried
 * bytes synchronously, verify before exec, resume on CANCEL. The payload is the address of a
 * one-entry connections table; the fd is carried. retrieve() returns a net.Socket on the same
 * connection (same peer), with the carried bytes delivered first.
 *
 * listener-v1 carries the listening fd; retrieve() returns { fd } for server.listen({ fd }).
 * Connections that arrive while the image changes wait in the kernel's backlog.
 */
import net from 'node:net';
import { fail } from '../errors.js';
import type { FileHandler } from '../luo/files.js';
import {
  freezeConnections, prepareConnection, readTable, releaseConnection, snapshotConnections, thawConnections, verifySnapshot,
  writeTable, adoptConnection, type ConnectionOptions, type ConnSnapshot,
} from './connection.js';
import { tlsModule } from './builtins.js';
import { fdOf, handleOf } from './node-internals.js';
import { PreservedServer } from './server.js';

export const isTls = (f: unknown): boolean => {
  if (!f || typeof f !== 'object') return false;
  const tls = tlsModule();
  return f instanceof tls.TLSSocket || f instanceof tls.Server;
};

/** Claims TLS sockets and servers only to refuse them with a reason. Registered first. */
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

interface HeldSocket { socket: net.Socket; opts: ConnectionOptions; table: number; snap: ConnSnapshot | null }

/** An fd with the handle that names it (its key for a successor that gets it early). */
const refOf = (x: net.Socket | net.Server): { fd: number; key: object } => ({ fd: fdOf(x), key: handleOf(x) });

export function socketHandler(opts: ConnectionOptions = {}): FileHandler<HeldSocket> {
  return {
    compatible: 'socket-v1',
    canPreserve: (f) => f instanceof net.Socket && !isTls(f),
    attach(file) {
      const socket = file as net.Socket;
      prepareConnection(socket);
      return { socket, opts, table: 0, snap: null };
    },
    detach(h) {
      releaseConnection(h.socket);
    },
    async freeze({ file }) {
      await freezeConnections([file.socket], file.opts);
    },
    snapshot({ file, luo }) {
      const snap = snapshotConnections([file.socket]);
      if (snap.count !== 1) throw fail('EBADF', 'the socket was closed during FREEZE');
      file.table = writeTable(luo, snap);
      file.snap = snap;
      return file.table;
    },
    verify({ file }) {
      if (file.snap) verifySnapshot(file.snap);
    },
    presend({ file }) {
      return [refOf(file.socket)];
    },
    fds({ file }) {
      return [refOf(file.socket)];
    },
    cancel({ file, luo }) {
      thawConnections([file.socket]);
      if (file.table) freeTable(luo, file.table);
      file.table = 0;
      file.snap = null;
    },
    retrieve({ data, luo }) {
      const { table } = readTable(luo, Number(data));
      if (table.count !== 1) throw fail('EIO', `socket-v1 payload holds ${table.count} connections`);
      return adoptConnection(table.at(0));
    },
  };
}

/** Free a connections table written by snapshot (its size is in its header). */
export function freeTable(luo: import('../luo/luo.js').Luo, addr: number): void {
  const v = luo.view(addr, 32);
  const size = Number(new DataView(v.buffer, v.byteOffset, 32).getBigUint64(16, true));
  luo.unpreserveFree(addr, size);
}

export const listenerHandler: FileHandler<net.Server> = {
  compatible: 'listener-v1',
  canPreserve: (f) => f instanceof net.Server && !isTls(f),
  attach(file) {
    const server = file as net.Server;
    fdOf(server); // EBADF unless listening
    return server;
  },
  prepare({ file }) {
    return BigInt(fdOf(file));
  },
  presend({ file }) {
    return [refOf(file)];
  },
  fds({ file }) {
    return [refOf(file)];
  },
  retrieve({ data, luo }) {
    return { fd: luo.kho.incomingFd(Number(data)) };
  },
};
