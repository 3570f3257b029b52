/*
 * handlers/upgraded: connections an http.Server no longer parses (after 'upgrade', or a
 * CONNECT), across an update. They must never go back to an HTTP parser: the next version's
 * would answer a WebSocket frame with "400 Bad Request". Each one has an owner that carries it,
 * or the update is refused.
 *
 * Owners ("carriers"), asked in order: the ones registered (socket.io, integrations/socketio.ts),
 * then the built-in one for `ws` WebSockets (handlers/ws-internals.ts reads ws's state), then
 * the server's `upgraded` option: 'raw' (the service takes the bytes itself in the next version:
 * restoreServer's `claim`), 'close' (closed at the freeze, and counted), or 'refuse' (default).
 *
 * Outgoing (the server handler drives it, handlers/server.ts):
 *   PREPARE and FREEZE  classify(): every upgraded connection gets its owner; any without one
 *                       (under 'refuse') fails the transition with EBUSY, naming how many and
 *                       what to do: the update is cancelled, nothing is lost.
 *   FREEZE              once reading stopped: wait, with the drain deadline, until every carried
 *                       connection is settled (a ws parser not inflating, nothing queued); a
 *                       WebSocket still closing at the deadline is closed and counted, one still
 *                       unsettled fails the FREEZE (EBUSY).
 *   snapshot            each carried one: its owner's pending input (bytes read from the socket
 *                       and not yet delivered as messages) goes in front of its unread bytes, and
 *                       its meta (the upgrade request, the owner's state) into the table.
 *   verify              each owner's fingerprint is unchanged.
 * Incoming (integrations/server.ts, restoreServer): an entry flagged UPGRADED goes to the
 * service's claim, else to its owner (meta.owner) in the next version: the upgrade is replayed
 * ('upgrade' with the original request; the library's 101 answer is swallowed once, as the
 * client has had it), else it stays unclaimed: kept open, unread, and reported, so that the
 * agent rolls the update back instead of finishing with connections dropped.
 */
import type net from 'node:net';
import { fail } from '../errors.js';
import { carryable, fingerprint, isClosing, isOpen, pendingInput, settled, webSocketOf } from './ws-internals.js';
import { leftHttp, recordRequest, type RequestRecord } from './node-internals.js';

/** What the server does with an upgraded connection no carrier owns. */
export type Unowned = 'refuse' | 'close' | 'raw';

/** Carried in the table for each upgraded connection (JSON). */
export interface UpgradeMeta {
  v: 1;
  /** The carrier that took it ('ws', 'socket.io', 'raw'). */
  owner: string;
  /** The request that upgraded it (absent for 'raw' without one). */
  req?: RequestRecord;
  /** The owner's own state (socket.io: the session). */
  state?: unknown;
}

export interface Carrier {
  readonly name: string;
  /** Does this carrier own `s` (an upgraded connection of `server`)? */
  owns(server: net.Server, s: net.Socket): boolean;
  /** Why `s` cannot be carried at all (null: it can). */
  refuse(s: net.Socket): string | null;
  /** Closing: wait for it to close; closed and counted if still closing at the deadline. */
  closing(s: net.Socket): boolean;
  /** Ready for the snapshot (nothing half-processed). */
  settled(s: net.Socket): boolean;
  /** Bytes read from the socket that its owner has not delivered yet, as the next version's
   *  owner must read them (in front of the socket's own unread bytes). */
  pendingInput(s: net.Socket): Buffer;
  /** The owner's state for the next version (JSON-able), or undefined. */
  state?(s: net.Socket): unknown;
  /** Changes when the owner consumed or produced anything (verify compares it). */
  fingerprint(s: net.Socket): string;
  /** FREEZE, before the server's HTTP requests drain: end what would hold the drain up (a
   *  long poll); returns how many sessions that leaves uncarried (counted as closed). */
  beforeDrain?(server: net.Server): number;
}

/** The built-in carrier: a `ws` WebSocket (or anything built on ws, through the socket). */
export const wsCarrier: Carrier = {
  name: 'ws',
  owns: (_server, s) => webSocketOf(s) !== null,
  refuse: (s) => carryable(webSocketOf(s)!),
  closing: (s) => isClosing(webSocketOf(s)!),
  settled: (s) => {
    const ws = webSocketOf(s)!;
    return isOpen(ws) && settled(ws);
  },
  pendingInput: (s) => pendingInput(webSocketOf(s)!),
  fingerprint: (s) => fingerprint(webSocketOf(s)!),
};

const carriers: Carrier[] = [];

/** Register a carrier; asked before the built-in ones (socket.io before ws: it runs on ws). */
export function registerCarrier(c: Carrier): void {
  if (!carriers.some((x) => x.name === c.name)) carriers.unshift(c);
}

/** Every carrier's beforeDrain for `server`: the sessions left uncarried. */
export function beforeDrain(server: net.Server): number {
  let n = 0;
  for (const c of carriers) n += c.beforeDrain?.(server) ?? 0;
  return n;
}

const REQUEST = Symbol('luo.upgradeRequest');
type WithRequest = net.Socket & { [REQUEST]?: RequestRecord };

/** Remember the request that upgraded `s` (the server's 'upgrade'/'connect', or a restore). */
export function rememberRequest(s: net.Socket, req: Parameters<typeof recordRequest>[0] | RequestRecord): void {
  (s as WithRequest)[REQUEST] = 'rawHeaders' in req && Array.isArray(req.rawHeaders) && 'httpVersion' in req && typeof req.httpVersion === 'string' && !('socket' in req)
    ? req as RequestRecord
    : recordRequest(req);
}

export function requestOf(s: net.Socket): RequestRecord | undefined {
  return (s as WithRequest)[REQUEST];
}

/** One upgraded connection and its owner (null: none; `unowned` decides). */
export interface Upgraded { socket: net.Socket; carrier: Carrier | null }

/** The server's upgraded connections, each with its owner; `live`: http.Server connections. */
export function upgradedOf(server: net.Server, live: Iterable<net.Socket>): Upgraded[] {
  const out: Upgraded[] = [];
  for (const s of live) {
    if (s.destroyed || !leftHttp(s)) continue;
    let carrier: Carrier | null = null;
    for (const c of carriers) if (c.owns(server, s)) { carrier = c; break; }
    if (!carrier && wsCarrier.owns(server, s)) carrier = wsCarrier;
    out.push({ socket: s, carrier });
  }
  return out;
}

/** The problems that refuse the update (EBUSY), in one message; null when there are none. */
export function refusal(ups: Upgraded[], unowned: Unowned): string | null {
  const why = new Map<string, number>();
  let noOwner = 0;
  let noRequest = 0;
  for (const u of ups) {
    if (!u.carrier) {
      if (unowned === 'refuse') noOwner++;
      continue;
    }
    const r = u.carrier.refuse(u.socket);
    if (r) why.set(r, (why.get(r) ?? 0) + 1);
    else if (!requestOf(u.socket)) noRequest++;
  }
  const parts: string[] = [];
  if (noOwner) {
    parts.push(`${noOwner} upgraded connection(s) have no owner that can carry them (after 'upgrade' the HTTP server no longer parses them, and the next version's would answer them with 400): use ws or socket.io (luo carries those), take them yourself with preserveServer's upgraded: 'raw' and restoreServer's claim, or let the update close them with upgraded: 'close'`);
  }
  if (noRequest) parts.push(`${noRequest} WebSocket connection(s) were upgraded before luo tracked their server, so the request to replay in the next version is unknown: call preserveServer as soon as the server listens (drop-in mode, --import luo/register, does)`);
  for (const [r, n] of why) parts.push(`${n} connection(s) cannot be carried: ${r}`);
  return parts.length ? parts.join('; ') : null;
}

/** What the freeze does with the upgraded connections: carry, or close (counted). */
export interface UpgradePlan {
  carried: Map<net.Socket, Carrier | null>;
  closed: number;
}

/**
 * FREEZE, after reading stopped: wait (until `deadline`) for every carried connection to settle;
 * close the ones still closing then (and, under 'close', every unowned one). EBUSY when one is
 * still unsettled at the deadline.
 */
export async function settleUpgraded(ups: Upgraded[], unowned: Unowned, deadline: number): Promise<UpgradePlan> {
  const plan: UpgradePlan = { carried: new Map(), closed: 0 };
  let waiting: Upgraded[] = [];
  for (const u of ups) {
    if (!u.carrier) {
      if (unowned === 'close') {
        u.socket.destroy();
        plan.closed++;
      } else plan.carried.set(u.socket, null); // 'raw'
    } else waiting.push(u);
  }
  for (;;) {
    const still: Upgraded[] = [];
    for (const u of waiting) {
      if (u.socket.destroyed) continue;
      if (!u.carrier!.closing(u.socket) && u.carrier!.settled(u.socket)) plan.carried.set(u.socket, u.carrier);
      else still.push(u);
    }
    waiting = still;
    if (waiting.length === 0) return plan;
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, 1));
  }
  const busy: Upgraded[] = [];
  for (const u of waiting) {
    if (u.carrier!.closing(u.socket)) {
      // Its close handshake was under way: it is going anyway.
      u.socket.destroy();
      plan.closed++;
    } else busy.push(u);
  }
  if (busy.length) throw fail('EBUSY', `${busy.length} upgraded connection(s) were still in the middle of a message (${busy.map((u) => u.carrier!.name).join(', ')}) at the freeze's deadline; try the update again`);
  return plan;
}

/** The meta of a carried upgraded connection, as the table stores it. */
export function metaOf(s: net.Socket, carrier: Carrier | null): Buffer {
  const m: UpgradeMeta = { v: 1, owner: carrier?.name ?? 'raw' };
  const req = requestOf(s);
  if (req) m.req = req;
  const st = carrier?.state?.(s);
  if (st !== undefined) m.state = st;
  return Buffer.from(JSON.stringify(m));
}

/** Decode a table entry's meta; null when absent or not luo's. */
export function parseMeta(b: Buffer): UpgradeMeta | null {
  if (!b.length) return null;
  try {
    const m = JSON.parse(b.toString()) as UpgradeMeta;
    return m && m.v === 1 && typeof m.owner === 'string' ? m : null;
  } catch {
    return null;
  }
}
