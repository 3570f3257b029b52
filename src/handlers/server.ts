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
 *   presend    (successor mode, before FREEZE, still serving) the listener and every live
 *              connection, each keyed by its libuv handle, go to the successor early; what
 *              changes until the snapshot (accepted, closed) is the delta of the handover.
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
 * event loop keeps serving while the rest are adopted. Busy connections (bytes carried, or
 * readable in the kernel: luo.kho.readyNow) are adopted first and served before any idle
 * one. A connection the caller claims (opts.claim, e.g. an upgraded WebSocket) goes to the
 * caller instead of the server, and stays tracked.
 */
import net from 'node:net';
import { trace } from '../config.js';
import { fail } from '../errors.js';
import type { FileHandler } from '../luo/files.js';
import type { Luo } from '../luo/luo.js';
import { State } from '../luo/abi.js';
import {
  adoptConnection, freezeConnections, readTable, releaseConnection, snapshotConnections, thawConnections, verifySnapshot,
  writeTable, type CarriedTable, type ConnSnapshot, type ConnectionOptions,
} from './connection.js';
import { attachToServer, fdOf, handleOf, httpBusy, scanSockets, stopReading, trackWrites } from './node-internals.js';
import { freeTable } from './socket.js';
import { httpModule } from './builtins.js';

const isHttp = (s: net.Server): boolean => s instanceof httpModule().Server;

export interface ServerOptions extends ConnectionOptions {
  /** http.Server: how long FREEZE waits for requests in progress to finish (default 5000 ms). */
  httpDrainMs?: number;
}

const TRACK = Symbol('luo.connections');
/** A server's live connections; `added` counts every one ever tracked (verify compares it). */
interface Tracking { conns: Set<net.Socket>; freezing: boolean; added: number }
type Tracked = net.Server & { [TRACK]?: Tracking };

/** The set of live connections of a server, tracked from the first call on. */
export function connectionsOf(server: net.Server): Set<net.Socket> {
  return tracking(server).conns;
}

function tracking(server: net.Server): Tracking {
  const t = server as Tracked;
  if (!t[TRACK]) {
    const state: Tracking = { conns: new Set<net.Socket>(), freezing: false, added: 0 };
    t[TRACK] = state;
    server.prependListener('connection', (s: net.Socket) => track(state, s));
  }
  return t[TRACK]!;
}

function track(state: Tracking, s: net.Socket): void {
  if (state.conns.has(s)) return;
  state.conns.add(s);
  state.added++;
  trackWrites(s);
  if (state.freezing) stopReading(s);
  s.once('close', () => state.conns.delete(s));
}

/** What preserveServer hands to luo. */
export class PreservedServer {
  readonly server: net.Server;
  readonly opts: ServerOptions;
  table = 0;
  snap: ConnSnapshot | null = null;
  /** tracking().added at the snapshot: a connection accepted after it fails verify. */
  addedAtSnapshot = 0;
  constructor(server: net.Server, opts: ServerOptions) {
    this.server = server;
    this.opts = opts;
  }
}

/** What retrieve returns; restoreServer turns it into a serving server. */
export interface RestoredServer { listenerFd: number; connections: CarriedTable; http: boolean }

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
    const t = tracking(ps.server);
    const snap = snapshotConnections(t.conns);
    ps.snap = snap;
    ps.addedAtSnapshot = t.added;
    ps.table = writeTable(luo, snap, isHttp(ps.server) ? 1 : 0, BigInt(fdOf(ps.server)));
    return ps.table;
  },
  verify({ file: ps }) {
    // Every connection of the snapshot unchanged (a closed one has lost its handle), and none
    // accepted since.
    verifySnapshot(ps.snap!);
    const added = tracking(ps.server).added - ps.addedAtSnapshot;
    if (added) throw fail('EBUSY', `server accepted ${added} connection(s) after its snapshot`);
  },
  presend({ file: ps }) {
    // The listener and every connection as they are now, each keyed by its handle, which
    // lives exactly as long as its fd. Connections accepted or closed until the freeze are
    // the delta the handover carries.
    const scan = scanSockets(connectionsOf(ps.server), false);
    const refs = new Array<{ fd: number; key: object }>(scan.sockets.length + 1);
    refs[0] = { fd: fdOf(ps.server), key: handleOf(ps.server) };
    for (let i = 0; i < scan.sockets.length; i++) refs[i + 1] = { fd: scan.fds[i]!, key: scan.handles[i]! };
    return refs;
  },
  fds({ file: ps }) {
    const snap = ps.snap!;
    const refs = new Array<{ fd: number; key: object }>(snap.count + 1);
    refs[0] = { fd: fdOf(ps.server), key: handleOf(ps.server) };
    for (let i = 0; i < snap.count; i++) refs[i + 1] = { fd: snap.fds[i]!, key: snap.handles[i]! };
    return refs;
  },
  cancel({ file: ps, luo }) {
    const t = tracking(ps.server);
    t.freezing = false;
    thawConnections(t.conns);
    if (ps.table) freeTable(luo, ps.table);
    ps.table = 0;
    ps.snap = null;
  },
  retrieve({ data, luo }): RestoredServer {
    const { table, flags, extra } = readTable(luo, Number(data));
    return { listenerFd: luo.kho.incomingFd(Number(extra)), connections: table, http: (flags & 1) !== 0 };
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
  // Serve first: connections with something to do (bytes carried, or waiting in the kernel:
  // in a successor, found among the fds watched since before the freeze at O(busy) cost)
  // are adopted before idle ones, and served before any idle one is adopted. Idle ones
  // follow in slices; they may wait a few slices without anyone noticing.
  const table = st.connections;
  const ready = luo.kho.readyNow(table.fds);
  // The order of adoption: busy ones (ready, or with bytes carried) first.
  for (const i of table.bytes.keys()) ready[i] = 1;
  const order = new Int32Array(table.count);
  let nBusy = 0;
  let k = table.count;
  for (let i = table.count - 1; i >= 0; i--) if (ready[i] !== 1) order[--k] = i;
  for (let i = 0; i < table.count; i++) if (ready[i] === 1) order[nBusy++] = i;
  trace(`restoreServer: ${table.count} connections, ${nBusy} busy first`);
  const t = tracking(server);
  // Adopt in slices of at most `sliceMs` (and `batch` connections), yielding to the event
  // loop in between: whatever is already adopted is served while the rest waits its turn.
  const batch = opts.batch ?? 256;
  const sliceMs = opts.sliceMs ?? 4;
  let sliceStart = performance.now();
  let inSlice = 0;
  const allowHalfOpen = (server as unknown as { allowHalfOpen?: boolean }).allowHalfOpen;
  for (let i = 0; i < order.length; i++) {
    const s = adoptConnection(table.at(order[i]!), { allowHalfOpen });
    attachToServer(server, s);
    opts.onConnection?.(s);
    if (opts.claim?.(s)) track(t, s);
    else server.emit('connection', s);
    if (i === 0) trace('restoreServer: first adopted');
    if (i === nBusy - 1) {
      // Serve the busy ones now: let the loop poll (and read them) before adopting any idle
      // one. One setImmediate is not enough: queued from outside the check phase (the
      // restore runs from a module's top-level await, an I/O callback, a timer) it runs in
      // this iteration's check phase, before any poll; queued from inside it, the next
      // immediate runs only after the next iteration's poll.
      trace('restoreServer: busy ones adopted');
      await new Promise((r) => setImmediate(() => setImmediate(r)));
      trace('restoreServer: busy ones served');
      sliceStart = performance.now();
      inSlice = 0;
    } else if (++inSlice >= batch || performance.now() - sliceStart >= sliceMs) {
      await new Promise((r) => setImmediate(r));
      sliceStart = performance.now();
      inSlice = 0;
    }
  }
  trace('restoreServer: all adopted');
  return { connections: table.count, unread: table.unread, unsent: table.unsent };
}
