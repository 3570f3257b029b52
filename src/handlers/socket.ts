/*
 * handlers/socket: one established TCP or Unix connection (a net.Socket) per token
 * ("socket-v2"), and a listening net.Server without its connections ("listener-v2").
 *
 * socket-v2 follows connection.ts: stop reading and drain at FREEZE, snapshot the carried
 * bytes synchronously, verify before the point of no return, resume on CANCEL. The payload is
 * the address of a one-entry connections table whose connection is the token's fd #0.
 * retrieve() returns a net.Socket on the same connection (same peer), the carried bytes
 * delivered first. It reads socket-v1 (luo 0.1) too.
 *
 * listener-v2 carries the listening fd as the token's fd #0 (the payload is 0); retrieve()
 * returns { fd } for server.listen({ fd }). Connections that arrive while the image changes
 * wait in the kernel's backlog. It reads listener-v1 (whose payload was the fd's number).
 */
import net from 'node:net';
import { fail } from '../errors.js';
import type { FileHandler } from '../luo/file-handler.js';
import {
  adoptConnection, freeTable, freezeConnections, holdSnapshot, prepareConnection, readTable, releaseConnection, releaseSnapshot, resumeConnections, snapshotConnections,
  thawConnections, verifySnapshot, writeTable, type ConnSnapshot, type ConnectionOptions,
} from './connection.js';
import { fdOf, handleOf } from './node-internals.js';
import { isTls } from './tls.js';

interface HeldSocket { socket: net.Socket; opts: ConnectionOptions; table: number; snap: ConnSnapshot | null }

/** An fd with the handle that names it (its key for a successor that gets it early). */
export const refOf = (x: net.Socket | net.Server): { fd: number; key: object } => ({ fd: fdOf(x), key: handleOf(x) });

export function socketHandler(opts: ConnectionOptions = {}): FileHandler<HeldSocket> {
  return {
    compatible: 'socket-v2',
    reads: ['socket-v1'],
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
    early: ({ file }) => [{ ...refOf(file.socket), stream: true }],
    snapshot({ file, memory }) {
      const snap = snapshotConnections([file.socket]);
      if (snap.count !== 1) throw fail('EBADF', 'the socket was closed during FREEZE');
      file.table = writeTable(memory, snap, 0, 0);
      file.snap = snap;
      return {
        data: file.table,
        fds: [refOf(file.socket)],
        verify: () => {
          verifySnapshot(snap);
          holdSnapshot(snap);
        },
      };
    },
    cancel({ file, memory, handedOver }) {
      // Resumed (or closed) first, by the kernel's counters; then what this process wrote
      // after the point of no return goes out.
      const r = handedOver ? resumeConnections([file.socket]) : (thawConnections([file.socket]), undefined);
      if (file.snap) releaseSnapshot(file.snap);
      file.snap = null;
      if (file.table) freeTable(memory, file.table);
      file.table = 0;
      return r;
    },
    retrieve(a) {
      const table = readTable(a);
      if (table.count !== 1) throw fail('EIO', `${a.compatible} payload holds ${table.count} connections`);
      return adoptConnection(table.at(0));
    },
  };
}

export const listenerHandler: FileHandler<net.Server> = {
  compatible: 'listener-v2',
  reads: ['listener-v1'],
  canPreserve: (f) => f instanceof net.Server && !isTls(f),
  attach(file) {
    const server = file as net.Server;
    fdOf(server); // EBADF unless listening
    return server;
  },
  early: ({ file }) => [refOf(file)],
  snapshot: ({ file }) => ({ data: 0n, fds: [refOf(file)] }),
  // listener-v1 carried the same one fd (its payload named it by number).
  retrieve: (a) => ({ fd: a.fd(0) }),
};
