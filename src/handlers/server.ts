/*
 * handlers/server: a whole server across an update: its listening socket and every live
 * connection, as one token ("server-v2"). Works for net.Server and http.Server (and anything
 * built on them: Express, Fastify's server, ws's upgrade path...). The service-facing calls
 * (preserveServer, restoreServer) are src/integrations/server.ts.
 *
 * Outgoing lifecycle:
 *   preserve   start tracking the server's connections (accepted or restored) and their
 *              writes; connections that close drop out by themselves.
 *   early      (successor mode, before FREEZE, still serving) the listener and every live
 *              connection, each keyed by its libuv handle, go to the successor early; what
 *              changes until the snapshot (accepted, closed) is the delta of the handover.
 *   afterEarly (the successor holds them, still serving) the baseline: the idle connections,
 *              watched from now on (connection.ts); FREEZE, snapshot and verify then handle
 *              only the others, the moved ones and those accepted since. http.Server, with
 *              the successor's wake set: the idle ones are parked as well (connection.ts:
 *              Parking): not read until input comes, then read again at once; the freeze
 *              stops only those.
 *   PREPARE    http.Server: every upgraded connection (after 'upgrade'; the server no longer
 *              parses it) needs an owner that carries it (handlers/upgraded.ts: ws, socket.io,
 *              or the `upgraded` option): else EBUSY naming how many and what to do.
 *   FREEZE     http.Server: connections with no request in progress stop reading at once; a
 *              connection with a response in progress keeps reading until that response has
 *              finished, then stops (so the next request stays in the kernel for the new code).
 *              If requests are still in progress at the deadline (httpDrainMs), FREEZE fails
 *              with EBUSY and the update is cancelled: no request is cut. Then every connection
 *              drains its writes (connection.ts), and the upgraded ones settle (upgraded.ts:
 *              the ownerless refused again, a WebSocket closing at the deadline closed and
 *              counted).
 *   snapshot   one connections table for all of them; the token's fds are the listener (#0)
 *              and then each connection, in the table's order. Upgraded ones carry their
 *              owner's pending input and meta (the request to replay).
 *   verify     nothing moved and no connection was accepted since the snapshot; then, the
 *              point of no return, nothing this process writes reaches those connections
 *              (holdSnapshot: a successor owns them now) unless the update is cancelled.
 *   CANCEL     every connection reads again; the table is freed. After a handover whose next
 *              version failed before FINISH: only the connections it left alone (connection.ts)
 *              read again; the others are closed and counted.
 * Incoming (retrieve): the listener's fd and the table (server-v1 of luo 0.1 is read too);
 * restoreServer does the rest.
 */
import net from 'node:net';
import { trace } from '../config.js';
import { fail } from '../errors.js';
import type { FdRef, FileHandler, FlatFds, HandlerMemory } from '../luo/file-handler.js';
import { TABLE_HTTP, baseBlockSize, copyWithout } from '../uapi/connections.js';
import {
  Baseline, freeTable, freezeConnections, keptRefs, snapshotWithBaseline, holdSnapshot, readTable, releaseConnection, releaseSnapshot, resumeConnections, snapshotConnections, thawConnections, verifySnapshot,
  writeTable, type CarriedTable, type ConnSnapshot, type ConnectionOptions, type Extra,
} from './connection.js';
import { fdOf, handleOf, httpBusy, observeEmits, stopAll, stopReading, trackWrites } from './node-internals.js';
import { httpModule } from './builtins.js';
import { slicer } from '../util/slicer.js';
import { beforeDrain, metaOf, refusal, rememberRequest, settleUpgraded, upgradedOf, type Carrier, type Unowned, type UpgradePlan } from './upgraded.js';

export const isHttp = (s: net.Server): boolean => s instanceof httpModule().Server;

export interface ServerOptions extends ConnectionOptions {
  /** http.Server: how long FREEZE waits for requests in progress to finish (default 5000 ms). */
  httpDrainMs?: number;
  /**
   * http.Server: an upgraded connection no owner carries (not ws, not socket.io): 'refuse'
   * the update (default; EBUSY, nothing lost), 'close' it at the freeze (counted in the
   * report), or 'raw': carry its bytes for restoreServer's `claim` in the next version.
   */
  upgraded?: Unowned;
  /** How the agent's report names this server (default: its address, e.g. "tcp 127.0.0.1:8080"). */
  label?: string;
}

const TRACK = Symbol('luo.connections');
/** A server's live connections; `added` counts every one ever tracked (verify compares it). */
interface Tracking {
  conns: Set<net.Socket>;
  freezing: boolean;
  added: number;
  /** Successor mode: the idle connections once the early send was done, watched since
   *  (connection.ts: Baseline). */
  base: Baseline | null;
  /** Connections tracked since the baseline was taken. */
  after: net.Socket[];
  /** While a baseline is being taken: the connections accepted meanwhile. */
  pendingBase: { after: net.Socket[] } | null;
  /** Between the early send and the baseline: the keys (handles) sent early. */
  sentEarly: Set<object> | null;
}
type Tracked = net.Server & { [TRACK]?: Tracking };

/** The set of live connections of a server, tracked from the first call on. */
export function connectionsOf(server: net.Server): Set<net.Socket> {
  return tracking(server).conns;
}

function tracking(server: net.Server): Tracking {
  const t = server as Tracked;
  if (!t[TRACK]) {
    const state: Tracking = { conns: new Set<net.Socket>(), freezing: false, added: 0, base: null, after: [], pendingBase: null, sentEarly: null };
    t[TRACK] = state;
    server.prependListener('connection', (s: net.Socket) => track(state, s));
    // The request that upgrades a connection, for its owner in the next version (seen without
    // listening for 'upgrade': a listener would change how Node answers an upgrade request).
    if (isHttp(server)) observeEmits(server, ['upgrade', 'connect'], (_ev, [req, socket]) => rememberRequest(socket as net.Socket, req as import('node:http').IncomingMessage));
  }
  return t[TRACK]!;
}

/** Track a connection as one of `server`'s (restoreServer does it for claimed connections). */
export function trackConnection(server: net.Server, s: net.Socket): void {
  track(tracking(server), s);
}

function track(state: Tracking, s: net.Socket): void {
  if (state.conns.has(s)) return;
  state.conns.add(s);
  state.added++;
  if (state.base) state.after.push(s);
  else state.pendingBase?.after.push(s);
  trackWrites(s);
  if (state.freezing) stopReading(s);
  s.once('close', () => state.conns.delete(s));
}

/**
 * Each live socket as an early ref (its fd, keyed by its handle), and the set of those keys,
 * in slices of SLICE_MS (util/slicer.ts) while the service serves between them (a pass over 10 000 sockets
 * took 8-10 ms, one stall as long as the pause). A socket may close in a later slice, or
 * while the refs are sent: the transport sends a placeholder for an fd closed by then
 * (successor.ts: presend), and the handover treats a key that is gone at the freeze as
 * closed; a reused number under a dead key is only an early copy dropped at the handover.
 */
async function liveRefs(sockets: Iterable<net.Socket>): Promise<{ refs: FdRef[]; keys: Set<object> }> {
  const socks = Array.from(sockets);
  const refs: FdRef[] = [];
  const keys = new Set<object>();
  const due = slicer();
  for (let i = 0; i < socks.length; i++) {
    const turn = due(i);
    if (turn) await turn;
    const s = socks[i]!;
    const h = (s as { _handle?: object | null })._handle;
    if (h && !s.destroyed) {
      refs.push({ fd: fdOf(s), key: h, stream: true });
      keys.add(h);
    }
  }
  return { refs, keys };
}

/** What preserveServer hands to luo. */
export class PreservedServer {
  readonly server: net.Server;
  readonly opts: ServerOptions;
  table = 0;
  /** Preserved memory reserved at PREPARE for the base block of the idle connections
   *  (successor mode; KHO preserves nothing new until FREEZE), freed at the snapshot when no
   *  block went into it, at CANCEL otherwise; after a handover the next image frees it. */
  reserve: { addr: number; size: number } | null = null;
  /** The last freeze's plan for the upgraded connections, and its snapshot. */
  plan: UpgradePlan | null = null;
  snap: ConnSnapshot | null = null;
  constructor(server: net.Server, opts: ServerOptions) {
    this.server = server;
    this.opts = opts;
  }
}

/** A server's address as the agent's report names it. */
export function labelOf(server: net.Server, opts: ServerOptions = {}): string {
  if (opts.label) return opts.label;
  const a = server.address();
  const kind = isHttp(server) ? 'http' : 'tcp';
  if (typeof a === 'string') return `${kind} ${a}`;
  if (!a) return kind;
  return `${kind} ${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
}

/** What retrieve returns; restoreServer turns it into a serving server. */
export interface RestoredServer {
  listenerFd: number;
  connections: CarriedTable;
  http: boolean;
  /** For each connection: input waiting (or hung up) now, a hint for serving it first. */
  ready(): Uint8Array;
  /** Retrieve.readySince: the fds (this token's and others') that have had input since the
   *  handover, each once, from the `from`-th on, in O(ready). */
  readySince(from: number): { fds: number[]; next: number } | null;
}

export const serverHandler: FileHandler<PreservedServer> = {
  compatible: 'server-v2',
  reads: ['server-v1'],
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
  prepare({ file: ps, memory }) {
    // Refuse before anything is stopped: an upgraded connection nobody can carry.
    if (isHttp(ps.server)) {
      const why = refusal(upgradedOf(ps.server, connectionsOf(ps.server)), ps.opts.upgraded ?? 'refuse');
      if (why) throw fail('EBUSY', `${labelOf(ps.server, ps.opts)}: ${why}`);
    }
    // Room for the base block of the idle connections a successor may read ahead (their
    // number when the baseline is taken, after the early send: the connections now and some
    // to spare). Untouched pages cost nothing; the snapshot frees it when it went unused.
    const n = connectionsOf(ps.server).size;
    releaseReserve(ps, memory);
    if (n) {
      const size = baseBlockSize(n + (n >> 3) + 64);
      ps.reserve = { addr: memory.alloc(size), size };
    }
  },
  async early({ file: ps }) {
    // The listener and every connection as they are now, each keyed by its handle, which
    // lives exactly as long as its fd. Connections accepted or closed until the freeze are
    // the delta the handover carries.
    const t = tracking(ps.server);
    t.base?.drop();
    t.base = null;
    t.after = [];
    const { refs, keys } = await liveRefs(t.conns);
    t.sentEarly = keys;
    refs.unshift({ fd: fdOf(ps.server), key: handleOf(ps.server) });
    return refs;
  },
  async afterEarly({ file: ps, memory, ahead, wake }) {
    // The successor holds the fds: take the baseline of the idle connections now, as close
    // to the freeze as it can be (in slices, serving between them), and watch them from
    // now on. The pause then handles only what moves from here, and what is accepted from
    // here, not every connection. Their counters go into a base block the successor reads
    // now (if it can: ahead), so that the table at the freeze carries only what moved.
    const t = tracking(ps.server);
    const sent = t.sentEarly ?? new Set<object>();
    t.base?.drop();
    t.base = null;
    const pending = { after: [] as net.Socket[] };
    t.pendingBase = pending;
    let base: Baseline;
    try {
      base = await Baseline.take(t.conns, { http: isHttp(ps.server), sentEarly: sent, wake });
    } finally {
      t.pendingBase = null;
    }
    t.base = base;
    t.after = pending.after;
    t.sentEarly = null;
    if (ahead && base.count && ps.reserve && base.blockSize <= ps.reserve.size) {
      base.writeBlock(memory, ps.reserve.addr);
      ahead(ps.reserve.addr, base.blockSize);
    } else base.encodeWords();
    trace(`server: baseline of ${base.count} idle connections${base.block ? ' (a base block)' : ''}${base.parking ? ` (${base.parking.count} parked)` : ''}, ${base.others.length} others, ${t.after.length} accepted meanwhile`);
  },
  async freeze({ file: ps }) {
    const t = tracking(ps.server);
    t.freezing = true;
    ps.plan = null;
    let released = 0;
    const http = isHttp(ps.server);
    const unowned = ps.opts.upgraded ?? 'refuse';
    // With a baseline, only what is not idle since it was taken is drained: the idle ones
    // stay as they were (an HTTP one stops reading, so no request starts in it now); one
    // that moves from here on stops reading at once and is drained with the others.
    const base = t.base;
    if (base) base.watch.onMove = (s) => void (!s.destroyed && (s as { _handle?: unknown })._handle && stopReading(s));
    const active = (): Iterable<net.Socket> => (base ? [...base.others, ...t.after, ...base.movedSockets()] : t.conns);
    if (base && http) {
      // Parked at the baseline, the idle ones read nothing: only those that got input since
      // and read again are stopped here (without parking, or if it gave up and every one reads
      // again: every one of them).
      const stop = base.parking?.active ? base.parking.freeze() : base.sockets;
      stopAll(stop);
      trace(`server: ${stop.length} idle connections stopped in the pause`);
    }
    if (http) {
      // An upgrade since PREPARE may have brought one nobody can carry.
      const why = refusal(upgradedOf(ps.server, active()), unowned);
      if (why) throw fail('EBUSY', `${labelOf(ps.server, ps.opts)}: ${why}`);
      released = beforeDrain(ps.server);
      await drainHttp(active(), ps.opts.httpDrainMs ?? 5000);
    }
    trace('server: reading stopped');
    const drainMs = ps.opts.drainTimeoutMs ?? 2000;
    const deadline = Date.now() + drainMs;
    await freezeConnections(active(), ps.opts);
    trace('server: writes drained');
    if (http) {
      const ups = upgradedOf(ps.server, active());
      const why = refusal(ups, unowned);
      if (why) throw fail('EBUSY', `${labelOf(ps.server, ps.opts)}: ${why}`);
      if (ups.length || released) {
        ps.plan = await settleUpgraded(ups, unowned, Math.max(deadline, Date.now() + 1));
        ps.plan.closed += released;
        trace(`server: ${ps.plan.carried.size} upgraded connections settled, ${ps.plan.closed} closed or not carried`);
      }
    }
  },
  snapshot({ file: ps, memory }) {
    const t = tracking(ps.server);
    // Upgraded connections: their owner's pending input and meta, and what verify compares.
    let extra: Map<net.Socket, Extra> | undefined;
    const prints: Array<[net.Socket, Carrier, string]> = [];
    if (ps.plan?.carried.size) {
      extra = new Map();
      for (const [s, carrier] of ps.plan.carried) {
        if (s.destroyed) continue;
        extra.set(s, { prefix: carrier ? carrier.pendingInput(s) : Buffer.alloc(0), meta: metaOf(s, carrier) });
        if (carrier) prints.push([s, carrier, carrier.fingerprint(s)]);
      }
    }
    const base = t.base;
    const snap = base ? snapshotWithBaseline(base, [...base.others, ...t.after, ...base.movedSockets()], extra) : snapshotConnections(t.conns, extra);
    ps.snap = snap;
    // No base block went into the room reserved for it (in place; or too many connections).
    if (!base?.block) releaseReserve(ps, memory);
    const addedAtSnapshot = t.added;
    ps.table = writeTable(memory, snap, isHttp(ps.server) ? TABLE_HTTP : 0, 1);
    // The listener (#0), this snapshot's connections (the busy ones: adopted and served first
    // in the next image), then the baseline's unmoved ones, as it took them.
    const q = snap.quiet;
    const k = q?.count ?? 0;
    const m = snap.count;
    const fds = new Array<{ fd: number; key: object }>(1 + m + k);
    fds[0] = { fd: fdOf(ps.server), key: handleOf(ps.server) };
    for (let i = 0; i < m; i++) fds[1 + i] = { fd: snap.fds[i]!, key: snap.handles[i]! };
    if (q) keptRefs(q.base.refs, q.base.watch.moved, fds, 1 + m);
    // And flat: the baseline's part copied as it was taken (those fds are the very ones sent
    // early), so that nothing reads 10 000 refs in the pause.
    let flat: FlatFds | undefined;
    if (q) {
      const n = fds.length;
      const nums = new Int32Array(n);
      const cells = new Uint8Array(4 * n);
      const dv = new DataView(cells.buffer);
      nums[0] = fds[0].fd;
      dv.setUint32(0, nums[0]!);
      for (let i = 0; i < m; i++) {
        nums[1 + i] = snap.fds[i]!;
        dv.setUint32(4 * (1 + i), snap.fds[i]!);
      }
      copyWithout(q.base.fds, 1, q.moved, nums, 1 + m);
      copyWithout(q.base.cells, 4, q.moved, cells, 4 * (1 + m));
      const same = new Uint8Array(n);
      same.fill(1, 1 + m);
      flat = { fds: nums, cells, same };
    }
    return {
      data: ps.table,
      fds,
      ...(flat ? { flat } : {}),
      report: { label: labelOf(ps.server, ps.opts), closed: ps.plan?.closed ?? 0 },
      verify() {
        // Every connection of the snapshot unchanged (a closed one has lost its handle), and
        // none accepted since; no owner of an upgraded one consumed or produced anything.
        verifySnapshot(snap);
        const added = tracking(ps.server).added - addedAtSnapshot;
        if (added) throw fail('EBUSY', `server accepted ${added} connection(s) after its snapshot`);
        for (const [s, carrier, print] of prints) {
          if (carrier.fingerprint(s) !== print) throw fail('EBUSY', `an upgraded connection (${carrier.name}) moved after its snapshot`);
        }
        // The point of no return: the successor owns these connections now.
        holdSnapshot(snap);
      },
    };
  },
  cancel({ file: ps, memory, handedOver }) {
    const t = tracking(ps.server);
    t.freezing = false;
    t.base?.drop();
    t.base = null;
    t.after = [];
    t.sentEarly = null;
    // After a handover whose next version failed: only what it left alone carries on (by the
    // kernel's counters); then what this process wrote after the point of no return goes out.
    const r = handedOver ? resumeConnections(t.conns) : (thawConnections(t.conns), undefined);
    if (ps.snap) releaseSnapshot(ps.snap);
    ps.snap = null;
    ps.plan = null;
    if (ps.table) freeTable(memory, ps.table);
    ps.table = 0;
    releaseReserve(ps, memory);
    return r;
  },
  retrieve(a): RestoredServer {
    const table = readTable(a);
    return { listenerFd: a.fd(0), connections: table, http: table.http, ready: () => a.ready(table.fds), readySince: (from) => a.readySince(from) };
  },
};

/** Free the memory reserved for a base block, if any. */
function releaseReserve(ps: PreservedServer, memory: HandlerMemory): void {
  if (ps.reserve) memory.free(ps.reserve.addr, ps.reserve.size);
  ps.reserve = null;
}

/** http.Server: stop reading idle connections now, busy ones as soon as their response ends. */
async function drainHttp(conns: Iterable<net.Socket>, ms: number): Promise<void> {
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

