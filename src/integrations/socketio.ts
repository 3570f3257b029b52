/*
 * integrations/socketio: socket.io (4.x) sessions across an update. A client on the websocket
 * transport stays connected: same socket id, rooms, data and handshake, in every namespace it
 * joined; emits and acks in flight are delivered exactly once.
 *
 *   carrySocketIo(io)   the API: carry this io's sessions (drop-in mode, luo/register, finds
 *                       every io as the app makes it: watchSocketIo)
 *
 * Outgoing (the old version; handlers/upgraded.ts drives the carrier):
 *   PREPARE/FREEZE   an upgraded connection that is an engine.io session on the websocket
 *                    transport belongs to socket.io (asked before plain ws); one this
 *                    socket.io version cannot describe refuses the update (EBUSY, the reason).
 *   FREEZE           before HTTP requests are drained: every long-polling session's pending
 *                    poll is answered (a noop), so the drain does not wait out a long poll;
 *                    those sessions are not carried (their clients reconnect: counted as
 *                    closed at the freeze). Then each websocket session settles: nothing queued
 *                    in engine.io, no binary packet half decoded, no socket in its middlewares,
 *                    and no acknowledgement outstanding either way (the client's for this
 *                    side's emits, this side's for the client's: a callback cannot cross), up
 *                    to the drain deadline (else EBUSY: try again).
 *   snapshot         the ws parser's pending input (ws-internals), and the session: engine.io
 *                    sid and protocol, each socket.io socket's namespace, id, pid, rooms, data
 *                    (v8-serialized) and handshake.
 * Incoming (restoreServer, through the reclaimer): the io this version made on the same server
 * takes it back: a ws WebSocket from engine.io's own ws server (the 101 swallowed: the client
 * had it), an engine.io session with the same sid and no 'open' packet, a socket.io Client, and
 * in each namespace the socket rebuilt from its session as connection-state recovery does
 * (`socket.recovered` is true), without a CONNECT packet. Middlewares run as for any connection;
 * one that refuses it is a refusal (counted). No io on that server here: unclaimed (the agent
 * rolls back).
 */
import Module from 'node:module';
import type net from 'node:net';
import v8 from 'node:v8';
import { registerCarrier, wsCarrier, type Carrier, type UpgradeMeta } from '../handlers/upgraded.js';
import {
  awaitedAcks, classesOf, countOwedAcks, engineBusy, halfDecoded, joinCarried, netSocketOf, newClient, owedAcks, rebuildSession, shapeProblem, socketsOf,
  type EioSocket, type IoServer, type Session,
} from './socketio-internals.js';
import { registerReclaimer, type ReclaimArgs } from './server.js';

const ios = new Set<IoServer>();

/** Carry `io`'s sessions across updates (drop-in mode does it for every io it sees). */
export function carrySocketIo(io: unknown): void {
  const x = io as IoServer;
  if (ios.has(x)) return;
  const cls = classesOf(x);
  if (typeof cls !== 'string') countOwedAcks(cls);
  ios.add(x);
  registerCarrier(carrier);
  registerReclaimer(reclaimer);
}

let watching = false;

/**
 * Drop-in mode: find each socket.io server as the app makes it. socket.io's dist/index.js is
 * wrapped as it loads (CommonJS, or imported from ESM: both go through Module._load), and its
 * Server's bind() (every attach ends in it) registers the instance.
 */
export function watchSocketIo(): void {
  if (watching) return;
  watching = true;
  const M = Module as unknown as { _load: (request: string, parent: unknown, isMain: boolean) => unknown };
  const load = M._load;
  const patched = new WeakSet<object>();
  M._load = function (this: unknown, request: string, parent: unknown, isMain: boolean): unknown {
    const exp = load.call(this, request, parent, isMain) as { Server?: { prototype: { bind?: (engine: unknown) => unknown } } } | undefined;
    const Server = exp && (typeof exp === 'object' || typeof exp === 'function') ? exp.Server : undefined;
    if (Server && typeof Server.prototype?.bind === 'function' && !patched.has(Server) && /socket\.io/.test(String(request))) {
      patched.add(Server);
      const bind = Server.prototype.bind;
      Server.prototype.bind = function (this: unknown, engine: unknown) {
        const r = bind.call(this, engine);
        carrySocketIo(this);
        return r;
      };
    }
    return exp;
  };
}

// ---------------------------------------------------------------------------------------------
// the old version

interface Found { io: IoServer; e: EioSocket }
let bySocket = new WeakMap<net.Socket, Found>();
let builtAt = -1;

/** The engine.io session a socket carries (a websocket one), for the io on `server`. */
function sessionOf(server: net.Server | null, s: net.Socket): Found | null {
  let f = bySocket.get(s);
  if (!f && performance.now() - builtAt > 5) {
    // Rebuilt at most once per few milliseconds: the freeze asks about every upgraded socket.
    bySocket = new WeakMap();
    for (const io of ios) {
      for (const e of Object.values(io.engine?.clients ?? {})) {
        const n = netSocketOf(e);
        if (n) bySocket.set(n, { io, e });
      }
    }
    builtAt = performance.now();
    f = bySocket.get(s);
  }
  if (!f || (server && f.io.httpServer && f.io.httpServer !== server)) return null;
  return f;
}

/** Long-polling sessions on `server`: answer their pending poll (a noop) so that the HTTP drain
 *  does not wait for it; they are not carried. How many. */
function releasePolls(server: net.Server): number {
  let n = 0;
  for (const io of ios) {
    if (io.httpServer !== server) continue;
    for (const e of Object.values(io.engine.clients)) {
      if (e.transport?.name !== 'polling') continue;
      n++;
      const t = e.transport as unknown as { writable: boolean; send(p: Array<{ type: string }>): void };
      if (t.writable) t.send([{ type: 'noop' }]);
    }
  }
  return n;
}

const carrier: Carrier = {
  name: 'socket.io',
  owns: (server, s) => sessionOf(server, s) !== null,
  refuse(s) {
    const f = sessionOf(null, s)!;
    const shape = shapeProblem(f.io);
    if (shape) return `this version of socket.io keeps its state elsewhere (${shape}): integrations/socketio-internals.ts needs updating`;
    return wsCarrier.refuse(s);
  },
  closing: (s) => wsCarrier.closing(s) || sessionOf(null, s)?.e.readyState === 'closing',
  settled(s) {
    if (!wsCarrier.settled(s)) return false;
    const f = sessionOf(null, s);
    if (!f) return false;
    if (engineBusy(f.e)) return false;
    const { connected, pending } = socketsOf(f.io, f.e);
    if (pending) return false;
    return connected.every((x) => owedAcks(x) === 0 && awaitedAcks(x) === 0 && !halfDecoded(x));
  },
  pendingInput: (s) => wsCarrier.pendingInput(s),
  state(s) {
    const f = sessionOf(null, s)!;
    const sockets: Array<Omit<Session, 'data'> & { data: string }> = socketsOf(f.io, f.e).connected.map((x) => ({
      nsp: x.nsp.name, id: x.id, pid: x.pid, rooms: [...x.rooms], data: v8.serialize(x.data).toString('base64'), handshake: x.handshake,
    }));
    return { eio: { sid: f.e.id, protocol: f.e.protocol }, sockets };
  },
  fingerprint(s) {
    const f = sessionOf(null, s);
    return `${wsCarrier.fingerprint(s)}|${f ? `${f.e.writeBuffer.length}:${socketsOf(f.io, f.e).connected.length}` : 'gone'}`;
  },
  beforeDrain: (server) => releasePolls(server),
};

// ---------------------------------------------------------------------------------------------
// the next version

interface Carried { eio: { sid: string; protocol: number }; sockets: Array<Omit<Session, 'data'> & { data: string }> }

const reclaimer = {
  owner: 'socket.io',
  async reclaim(a: ReclaimArgs): Promise<void> {
    const io = [...ios].find((x) => x.httpServer === a.server);
    if (!io) throw new Error('no socket.io server is attached to this server in this version');
    const cls = classesOf(io);
    if (typeof cls === 'string') throw new Error(cls);
    const st = (a.meta as UpgradeMeta).state as Carried;
    const engine = io.engine;
    if (!engine.ws) throw new Error('engine.io has no websocket server (the websocket transport is off)');
    engine.prepare(a.req);
    const answered = a.handshake();
    const ws = await new Promise<unknown>((resolve, reject) => {
      engine.ws!.handleUpgrade(a.req, a.socket, a.head, resolve);
      void answered.then((o) => {
        if (o !== 'taken') reject(new Error(`engine.io's ws server did not take it (${o})`));
      });
    });
    (a.req as unknown as { websocket: unknown }).websocket = ws;
    const transport = engine.createTransport('websocket', a.req);
    const conn = rebuildSession(engine, cls, st.eio.sid, st.eio.protocol, transport, a.req);
    const client = newClient(io, cls, conn);
    for (const s of st.sockets) {
      await joinCarried(io, cls, client, { ...s, data: v8.deserialize(Buffer.from(s.data, 'base64')) });
    }
  },
};
