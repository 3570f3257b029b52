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
  freezeConnections, prepareConnection, readTable, releaseConnection, snapshotConnection, thawConnections, verifyUnchanged,
  writeTable, adoptConnection, type ConnectionOptions, type Seen,
} from './connection.js';
import { tlsModule } from './builtins.js';
import { fdOf } from './node-internals.js';
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

interface HeldSocket { socket: net.Socket; opts: ConnectionOptions; table: number; seen: Seen[] }

export function socketHandler(opts: ConnectionOptions = {}): FileHandler<HeldSocket> {
  return {
    compatible: 'socket-v1',
    canPreserve: (f) => f instanceof net.Socket && !isTls(f),
    attach(file) {
      const socket = file as net.Socket;
      prepareConnection(socket);
      return { socket, opts, table: 0, seen: [] };
    },
    detach(h) {
      releaseConnection(h.socket);
    },
    async freeze({ file }) {
      await freezeConnections([file.socket], file.opts);
    },
    snapshot({ file, luo }) {
      const { carried, seen } = snapshotConnection(file.socket);
      file.table = writeTable(luo, [carried]);
      file.seen = [seen];
      return file.table;
    },
    verify({ file }) {
      verifyUnchanged(file.seen);
    },
    fds({ file }) {
      return [fdOf(file.socket)];
    },
    cancel({ file, luo }) {
      thawConnections([file.socket]);
      if (file.table) freeTable(luo, file.table);
      file.table = 0;
    },
    retrieve({ data, luo }) {
      const { conns } = readTable(luo, Number(data));
      if (conns.length !== 1) throw fail('EIO', `socket-v1 payload holds ${conns.length} connections`);
      return adoptConnection(conns[0]!);
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
  fds({ file }) {
    return [fdOf(file)];
  },
  retrieve({ data, luo }) {
    return { fd: luo.kho.incomingFd(Number(data)) };
  },
};
