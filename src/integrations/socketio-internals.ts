/*
 * integrations/socketio-internals: the ONLY place luo reads or writes the internals of
 * socket.io (4.x) and its engine.io (6.x). test/socketio-internals.test.ts fails loudly on a
 * version where any of them changed.
 *
 * luo never imports socket.io: it works on the application's own instances (io) and classes
 * (found through the module that defined io's class). What it relies on:
 *   io.engine, io.httpServer, io._nsps        the engine, the server it is attached to, the
 *                                            namespaces
 *   engine.clients (sid → socket)            engine.io's sessions; socket.id, .protocol,
 *   engine.ws (a ws WebSocketServer)           .transport (.name, .socket: the ws WebSocket,
 *   engine.prepare(req),                       .writable), .writeBuffer, .upgrading,
 *   engine.createTransport(name, req)          .readyState, .schedulePing(), onOpen (replaced
 *                                              while a carried session is rebuilt: it sends the
 *                                              'open' packet the client already has)
 *   nsp.sockets, nsp._preConnectSockets,     a namespace's sockets, and those still in their
 *   nsp._add(client, auth, fn),                middlewares; how a socket joins it; how a socket
 *   nsp._createSocket (per instance)           is made (replaced on the instance: a carried one
 *                                              is made from its previous session, as socket.io's
 *                                              own connection-state recovery does)
 *   socket.id, .pid, .rooms, .data,          what a socket.io socket is, and what it waits for:
 *     .handshake, .acks, .client, .nsp,        acknowledgements the client owes (acks), and
 *     Socket.prototype.ack                     ones this side owes (ack(): wrapped to count)
 *   socket.packet (per instance)             to drop the CONNECT packet of a carried socket
 *                                              (the client is connected already)
 *   client.conn, .decoder.reconstructor,     the engine socket of a client, a binary packet
 *     .sockets, .nsps, .connectTimeout         half received, its namespaces
 *   new Client(io, conn)                     socket.io's dist/client.js: what io.onconnection
 *                                              makes for a new engine.io session
 * Lifecycle: see integrations/socketio.ts.
 */
import { createRequire } from 'node:module';
import type net from 'node:net';

export interface EioSocket {
  id: string;
  protocol: number;
  readyState: string;
  upgrading: boolean;
  writeBuffer: unknown[];
  transport: { name: string; writable: boolean; socket?: { _socket?: net.Socket } ; onRequest?(req: unknown): void };
  request: unknown;
  once(ev: string, fn: (...a: unknown[]) => void): void;
  schedulePing(): void;
  emit(ev: string, ...a: unknown[]): boolean;
}

export interface EioServer {
  clients: Record<string, EioSocket>;
  clientsCount: number;
  ws?: { handleUpgrade(req: unknown, socket: net.Socket, head: Buffer, cb: (ws: unknown) => void): void };
  prepare(req: unknown): void;
  createTransport(name: string, req: unknown): EioSocket['transport'];
  emit(ev: string, ...a: unknown[]): boolean;
  opts: { pingInterval: number };
}

export interface SioSocket {
  id: string;
  pid?: string;
  rooms: Set<string>;
  data: unknown;
  handshake: Record<string, unknown>;
  acks: Map<number, unknown>;
  connected: boolean;
  recovered: boolean;
  nsp: SioNamespace;
  client: SioClient;
  packet(p: { type: number; data?: unknown }, opts?: unknown): void;
}

export interface SioNamespace {
  name: string;
  sockets: Map<string, SioSocket>;
  _preConnectSockets?: Map<string, SioSocket>;
  _add(client: SioClient, auth: unknown, fn: (s: SioSocket) => void): Promise<void> | void;
  _createSocket(client: SioClient, auth: unknown): Promise<SioSocket> | SioSocket;
}

export interface SioClient {
  conn: EioSocket;
  sockets: Map<string, SioSocket>;
  nsps: Map<string, SioSocket>;
  connectTimeout?: NodeJS.Timeout;
  decoder?: { reconstructor?: unknown };
}

export interface IoServer {
  engine: EioServer;
  httpServer?: net.Server;
  _nsps: Map<string, SioNamespace>;
  of(name: string): SioNamespace;
}

/** The classes of the socket.io and engine.io that made `io` (its own copies, wherever they are). */
export interface Classes {
  Client: new (io: IoServer, conn: EioSocket) => SioClient;
  Socket: new (nsp: SioNamespace, client: SioClient, auth: unknown, previous?: { sid: string; pid?: string; rooms: string[]; data: unknown; missedPackets: unknown[] }) => SioSocket;
  EioSocket: { prototype: { onOpen: () => void } } & (new (id: string, server: EioServer, transport: unknown, req: unknown, protocol: number) => EioSocket);
  CONNECT: number;
  CONNECT_ERROR: number;
}

/** socket.io's module (dist/index.js) whose Server class made `io`; null when not found. */
function moduleOf(io: IoServer): NodeModule | null {
  const req = createRequire(import.meta.url);
  const cache = (req as unknown as { cache: Record<string, NodeModule> }).cache;
  for (const m of Object.values(cache)) {
    const e = m?.exports as { Server?: unknown } | undefined;
    if (e && (typeof e === 'object' || typeof e === 'function') && e.Server === io.constructor && m.filename.endsWith('index.js')) return m;
  }
  return null;
}

const classCache = new WeakMap<object, Classes | string>();

/** The classes, or why they cannot be found (this socket.io keeps them elsewhere). */
export function classesOf(io: IoServer): Classes | string {
  const hit = classCache.get(io.constructor);
  if (hit) return hit;
  const r = findClasses(io);
  classCache.set(io.constructor, r);
  return r;
}

function findClasses(io: IoServer): Classes | string {
  const m = moduleOf(io);
  if (!m) return 'socket.io\'s module is not in require.cache';
  const e = m.exports as { Socket?: unknown };
  const from = createRequire(m.filename);
  let eio: { Socket?: unknown };
  let parser: { PacketType?: { CONNECT?: number; CONNECT_ERROR?: number } };
  let client: { Client?: unknown };
  try {
    eio = from('engine.io') as typeof eio;
    parser = from('socket.io-parser') as typeof parser;
    client = from('./client.js') as typeof client;
  } catch (err) {
    return `engine.io, socket.io-parser or socket.io's client.js cannot be found from socket.io: ${(err as Error).message}`;
  }
  if (typeof client.Client !== 'function') return 'socket.io\'s client.js exports no Client class';
  const EioSocket = eio.Socket as Classes['EioSocket'] | undefined;
  if (typeof e.Socket !== 'function') return 'socket.io exports no Socket class';
  if (typeof EioSocket !== 'function' || typeof EioSocket.prototype.onOpen !== 'function') return 'engine.io exports no Socket class with onOpen';
  const CONNECT = parser.PacketType?.CONNECT;
  const CONNECT_ERROR = parser.PacketType?.CONNECT_ERROR;
  if (typeof CONNECT !== 'number' || typeof CONNECT_ERROR !== 'number') return 'socket.io-parser has no PacketType.CONNECT';
  return { Client: client.Client as Classes['Client'], Socket: e.Socket as Classes['Socket'], EioSocket, CONNECT, CONNECT_ERROR };
}

/** Check that an io instance has the shape this adapter reads; the first thing missing, else null. */
export function shapeProblem(io: IoServer): string | null {
  if (!io.engine || typeof io.engine.clients !== 'object') return 'io.engine.clients';
  if (typeof io.engine.prepare !== 'function' || typeof io.engine.createTransport !== 'function') return 'engine.prepare/createTransport';
  if (!(io._nsps instanceof Map)) return 'io._nsps';
  const cls = classesOf(io);
  if (typeof cls === 'string') return cls;
  if (typeof (cls.Socket.prototype as { ack?: unknown }).ack !== 'function') return 'Socket.prototype.ack';
  for (const nsp of io._nsps.values()) {
    if (typeof nsp._add !== 'function' || typeof nsp._createSocket !== 'function' || !(nsp.sockets instanceof Map)) return 'namespace._add/_createSocket/sockets';
  }
  return null;
}

/** The net.Socket under an engine.io session on the websocket transport (null otherwise). */
export function netSocketOf(e: EioSocket): net.Socket | null {
  return e.transport?.name === 'websocket' ? e.transport.socket?._socket ?? null : null;
}

/** Every socket.io socket of one engine.io session, across namespaces (connected or in middlewares). */
export function socketsOf(io: IoServer, e: EioSocket): { connected: SioSocket[]; pending: number } {
  const connected: SioSocket[] = [];
  let pending = 0;
  for (const nsp of io._nsps.values()) {
    for (const s of nsp.sockets.values()) if (s.client.conn === e) connected.push(s);
    for (const s of nsp._preConnectSockets?.values() ?? []) if (s.client.conn === e) pending++;
  }
  return { connected, pending };
}

const OWED = Symbol('luo.acksOwed');
type Owing = SioSocket & { [OWED]?: number };
const wrapped = new WeakSet<object>();

/** Count, per socket, the acknowledgements this side owes the client (ack() made, not called). */
export function countOwedAcks(cls: Classes): void {
  const proto = cls.Socket.prototype as { ack(id: number): (...a: unknown[]) => void };
  if (wrapped.has(proto)) return;
  wrapped.add(proto);
  const ack = proto.ack;
  proto.ack = function (this: Owing, id: number) {
    const f = ack.call(this, id);
    this[OWED] = (this[OWED] ?? 0) + 1;
    let called = false;
    return (...args: unknown[]) => {
      if (!called) {
        called = true;
        this[OWED]! -= 1;
      }
      return f(...args);
    };
  };
}

export const owedAcks = (s: SioSocket): number => (s as Owing)[OWED] ?? 0;
export const awaitedAcks = (s: SioSocket): number => s.acks.size;
export const halfDecoded = (s: SioSocket): boolean => Boolean(s.client.decoder?.reconstructor);
export const engineBusy = (e: EioSocket): boolean => e.upgrading || e.writeBuffer.length > 0 || !e.transport.writable || e.readyState !== 'open';

/**
 * Next image: an engine.io session with its previous id on `transport`, without the 'open'
 * packet (the client has it), registered on the engine, its heartbeat scheduled as for a new
 * one. socket.io's Client for it: newClient().
 */
export function rebuildSession(engine: EioServer, cls: Classes, sid: string, protocol: number, transport: unknown, req: unknown): EioSocket {
  const proto = cls.EioSocket.prototype as { onOpen: () => void };
  const onOpen = proto.onOpen;
  proto.onOpen = function (this: EioSocket) {
    this.readyState = 'open';
    (this.transport as { sid?: string }).sid = this.id;
    this.emit('open');
    this.schedulePing();
  };
  let socket: EioSocket;
  try {
    socket = new cls.EioSocket(sid, engine, transport, req, protocol);
  } finally {
    proto.onOpen = onOpen;
  }
  engine.clients[sid] = socket;
  engine.clientsCount++;
  socket.once('close', () => {
    delete engine.clients[sid];
    engine.clientsCount--;
  });
  return socket;
}

/** socket.io's Client for a rebuilt session, as io.onconnection makes one. */
export function newClient(io: IoServer, cls: Classes, conn: EioSocket): SioClient {
  return new cls.Client(io, conn);
}

export interface Session { nsp: string; id: string; pid?: string; rooms: string[]; data: unknown; handshake: Record<string, unknown> }

/**
 * Next image: join a carried socket.io socket to its namespace on `client`, as socket.io's
 * connection-state recovery would (same id, pid, rooms and data; `recovered` true), with its
 * previous handshake, and without the CONNECT packet (the client is connected). The
 * namespace's middlewares run as for any connection. Resolves with the socket once it is
 * connected ('connection' emitted); rejects if a middleware refused it.
 */
export function joinCarried(io: IoServer, cls: Classes, client: SioClient, s: Session): Promise<SioSocket> {
  const nsp = io.of(s.nsp);
  const made = new Promise<SioSocket>((resolve, reject) => {
    const create = nsp._createSocket;
    // One socket at a time per namespace is made here; the override is put back at once.
    nsp._createSocket = (c: SioClient, auth: unknown): SioSocket => {
      nsp._createSocket = create;
      const sock = new cls.Socket(nsp, c, auth, { sid: s.id, pid: s.pid, rooms: s.rooms, data: s.data, missedPackets: [] });
      sock.handshake = s.handshake;
      const packet = sock.packet;
      sock.packet = function (this: SioSocket, p, opts) {
        if (p.type === cls.CONNECT) {
          this.packet = packet;
          return;
        }
        if (p.type === cls.CONNECT_ERROR) {
          this.packet = packet;
          reject(new Error(`the namespace ${s.nsp} refused it: ${JSON.stringify(p.data)}`));
        }
        return packet.call(this, p, opts);
      };
      return sock;
    };
    void Promise.resolve(nsp._add(client, s.handshake.auth ?? {}, (sock) => {
      client.sockets.set(sock.id, sock);
      client.nsps.set(nsp.name, sock);
      if (client.connectTimeout) {
        clearTimeout(client.connectTimeout);
        client.connectTimeout = undefined;
      }
      resolve(sock);
    })).catch(reject);
  });
  return made;
}
