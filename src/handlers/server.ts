/*
 * handlers/server: a whole server across an update: its listening socket and every live
 * connection, as one token ("server-v1"). Works for net.Server and http.Server (and anything
 * built on them: Express, Fastify's server, ws's upgrade path...).
 *
 *   preserveServer(luo, token, server, opts)   in the old image (NORMAL or UPDATED)
 *   restoreServer(luo, token, server, opts)    in the new image (UPDATED)
 *
 * Outgoing lifecycle:
 *   preserve   start tracking the server's connections (accepted or restored) and their
 *              writes; connections that close drop out by themselves.
 *   FREEZE     http.Server: connections with no request in progress stop reading at once; a
 *              connection with a response in progress keeps reading until that response has
 *              finished, then stops (so the next request stays in the kernel for the new code).
 *              If requests are still in progress at the deadline (httpDrainMs), FREEZE fails
 *              with EBUSY and the update is cancelled: no request is cut. Then every connection
 *              drains its writes (connection.ts).
 *   snapshot   one connections table for all of them; the listener fd in its header.
 *   verify     nothing moved and no connection was accepted since the snapshot.
 *   CANCEL     every connection reads again; the table is freed.
 * Incoming (restoreServer): listen on the same listening socket first (serving starts
 * there), then hand each connection to the server as if it had just been accepted
 * (server.emit('connection')), carried bytes first, in slices of a few milliseconds so the
 * event loop keeps serving while the rest are adopted. Busy connections (bytes carried, or readable in the
 * kernel: one poll over all of them) are adopted before idle ones. A connection the caller claims (opts.claim, e.g. an
 * upgraded WebSocket) goes to the caller instead of the server, and stays tracked.
 */
import net from 'node:net';
import { trace } from '../config.js';
import * as sys from '../sys/index.js';
import { fail } from '../errors.js';
import type { FileHandler } from '../luo/files.js';
import type { Luo } from '../luo/luo.js';
import { State } from '../luo/abi.js';
import {
  adoptConnection, freezeConnections, readTable, releaseConnection, snapshotConnection, thawConnections, verifyUnchanged,
  writeTable, type Carried, type ConnectionOptions, type Seen,
} from './connection.js';
import { attachToServer, fdOf, httpBusy, stopReading, trackWrites } from './node-internals.js';
import { freeTable } from './socket.js';
import { httpModule } from './builtins.js';

const isHttp = (s: net.Server): boolean => s instanceof httpModule().Server;

export interface ServerOptions extends ConnectionOptions {
  /** http.Server: how long FREEZE waits for requests in progress to finish (default 5000 ms). */
  httpDrainMs?: number;
}

const TRACK = Symbol('luo.connections');
type Tracked = net.Server & { [TRACK]?: { conns: Set<net.Socket>; freezing: boolean } };

/** The set of live connections of a server, tracked from the first call on. */
export function connectionsOf(server: net.Server): Set<net.Socket> {
  return tracking(server).conns;
}

function tracking(server: net.Server): { conns: Set<net.Socket>; freezing: boolean } {
  const t = server as Tracked;
  if (!t[TRACK]) {
    const state = { conns: new Set<net.Socket>(), freezing: false };
    t[TRACK] = state;
    server.prependListener('connection', (s: net.Socket) => track(state, s));
  }
  return t[TRACK]!;
}

function track(state: { conns: Set<net.Socket>; freezing: boolean }, s: net.Socket): void {
  if (state.conns.has(s)) return;
  state.conns.add(s);
  trackWrites(s);
  if (state.freezing) stopReading(s);
  s.once('close', () => state.conns.delete(s));
}

/** What preserveServer hands to luo. */
export class PreservedServer {
  readonly server: net.Server;
  readonly opts: ServerOptions;
  table = 0;
  seen: Seen[] = [];
  count = 0;
  constructor(server: net.Server, opts: ServerOptions) {
    this.server = server;
    this.opts = opts;
  }
}

/** What retrieve returns; restoreServer turns it into a serving server. */
export interface RestoredServer { listenerFd: number; connections: Carried[]; http: boolean }

export const serverHandler: FileHandler<PreservedServer> = {
  compatible: 'server-v1',
  canPreserve: (f) => f instanceof PreservedServer,
  attach(file) {
    const ps = file as PreservedServer;
    fdOf(ps.server); // EBADF unless listening
    for (const s of connectionsOf(ps.server)) trackWrites(s);
    return ps;
  },
  detach(ps) {
    for (const s of connectionsOf(ps.server)) releaseConnection(s);
  },
  async freeze({ file: ps }) {
    const t = tracking(ps.server);
    t.freezing = true;
    if (isHttp(ps.server)) await drainHttp(t.conns, ps.opts.httpDrainMs ?? 5000);
    trace('server: reading stopped');
    await freezeConnections(t.conns, ps.opts);
    trace('server: writes drained');
  },
  snapshot({ file: ps, luo }) {
    const conns = [...connectionsOf(ps.server)].filter((s) => !s.destroyed);
    const snaps = conns.map(snapshotConnection);
    ps.seen = snaps.map((x) => x.seen);
    ps.count = conns.length;
    ps.table = writeTable(luo, snaps.map((x) => x.carried), isHttp(ps.server) ? 1 : 0, BigInt(fdOf(ps.server)));
    return ps.table;
  },
  verify({ file: ps }) {
    verifyUnchanged(ps.seen);
    const live = [...connectionsOf(ps.server)].filter((s) => !s.destroyed).length;
    if (live !== ps.count) throw fail('EBUSY', `server has ${live} connections, ${ps.count} at its snapshot`);
  },
  fds({ file: ps }) {
    return [fdOf(ps.server), ...ps.seen.map((x) => fdOf(x.socket))];
  },
  cancel({ file: ps, luo }) {
    const t = tracking(ps.server);
    t.freezing = false;
    thawConnections(t.conns);
    if (ps.table) freeTable(luo, ps.table);
    ps.table = 0;
    ps.seen = [];
  },
  retrieve({ data, luo }): RestoredServer {
    const { conns, flags, extra } = readTable(luo, Number(data));
    return { listenerFd: luo.kho.incomingFd(Number(extra)), connections: conns, http: (flags & 1) !== 0 };
  },
};

/** http.Server: stop reading idle connections now, busy ones as soon as their response ends. */
async function drainHttp(conns: Set<net.Socket>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  let busy = [...conns].filter((s) => !s.destroyed);
  for (;;) {
    const still: net.Socket[] = [];
    for (const s of busy) {
      if (s.destroyed) continue;
      if (httpBusy(s)) still.push(s);
      else stopReading(s);
    }
    busy = still;
    if (busy.length === 0) return;
    if (Date.now() >= deadline) throw fail('EBUSY', `${busy.length} HTTP request(s) still in progress after ${ms} ms; try the update again`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Preserve a listening server and all its live connections under one token. */
export function preserveServer(luo: Luo, token: bigint | number, server: net.Server, opts: ServerOptions = {}): void {
  luo.preserveFile(token, new PreservedServer(server, opts));
}

export interface RestoreOptions {
  /** At most this many connections adopted per event-loop turn (default 256)... */
  batch?: number;
  /** ...and for at most this long (default 4 ms), so requests keep being served meanwhile. */
  sliceMs?: number;
  /** Called for each adopted connection before the server sees it. */
  onConnection?: (s: net.Socket) => void;
  /**
   * Take a connection yourself: return true and the server never sees it (it stays tracked,
   * so the next update carries it again). For connections the server no longer parses, such
   * as an upgraded WebSocket, which an http.Server would answer with 400.
   */
  claim?: (s: net.Socket) => boolean;
}

/**
 * In the next image: make `server` listen on the handed-over socket, then give it every
 * handed-over connection as if just accepted. Resolves once all are adopted; the server
 * serves from the first moment.
 */
export async function restoreServer(luo: Luo, token: bigint | number, server: net.Server, opts: RestoreOptions = {}): Promise<{ connections: number; unread: number; unsent: number }> {
  if (luo.state !== State.UPDATED) throw fail('EBUSY', `restoreServer needs state updated, not ${luo.stateName}`);
  trace('restoreServer: start');
  const st = await luo.restoreFile<RestoredServer>(token);
  trace('restoreServer: table read');
  if (st.http && !isHttp(server)) throw fail('EINVAL', 'the handed-over server was an http.Server; restore it into one');
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd: st.listenerFd }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  trace('restoreServer: listening');
  // Serve first: connections with something to do (bytes carried, or waiting in the kernel)
  // are adopted before idle ones, which may wait a few batches without anyone noticing.
  const ready = sys.readyNow(st.connections.map((c) => c.fd));
  const busy: Carried[] = [];
  const idle: Carried[] = [];
  st.connections.forEach((c, i) => (ready[i] === 1 || c.unread.length > 0 || c.unsent.length > 0 ? busy : idle).push(c));
  const conns = [...busy, ...idle];
  trace(`restoreServer: ${conns.length} connections, ${busy.length} busy first`);
  const t = tracking(server);
  // Adopt in slices of at most `sliceMs` (and `batch` connections), yielding to the event
  // loop in between: whatever is already adopted is served while the rest waits its turn.
  const batch = opts.batch ?? 256;
  const sliceMs = opts.sliceMs ?? 4;
  let sliceStart = performance.now();
  let inSlice = 0;
  for (let i = 0; i < conns.length; i++) {
    const s = adoptConnection(conns[i]!, { allowHalfOpen: (server as unknown as { allowHalfOpen?: boolean }).allowHalfOpen });
    attachToServer(server, s);
    opts.onConnection?.(s);
    if (opts.claim?.(s)) track(t, s);
    else server.emit('connection', s);
    if (i === 0) trace('restoreServer: first adopted');
    if (++inSlice >= batch || performance.now() - sliceStart >= sliceMs) {
      await new Promise((r) => setImmediate(r));
      sliceStart = performance.now();
      inSlice = 0;
    }
  }
  trace('restoreServer: all adopted');
  return {
    connections: st.connections.length,
    unread: st.connections.reduce((n, c) => n + c.unread.length, 0),
    unsent: st.connections.reduce((n, c) => n + c.unsent.length, 0),
  };
}
