/*
 * integrations/server: a whole server across an update, as a service writes it:
 *
 *   preserveServer(luo, token, server, opts)   in the old image (NORMAL or UPDATED)
 *   restoreServer(luo, token, server, opts)    in the new image (UPDATED)
 *
 * The server-v2 file handler (handlers/server.ts) does the carrying; this is the part that
 * puts a handed-over server back to work. restoreServer: listen on the same listening socket
 * first (serving starts there), then hand each connection to the server as if it had just
 * been accepted (server.emit('connection')), carried bytes first, in slices of a few
 * milliseconds so the event loop keeps serving while the rest are adopted. Busy connections
 * (bytes carried, or readable in the kernel) are adopted first and served before any idle one.
 * A connection the caller claims (opts.claim) goes to the caller instead of the server, and
 * stays tracked.
 * Upgraded connections (handlers/upgraded.ts) never go to the HTTP parser: one a library
 * carried (ws, socket.io) goes back to it: its upgrade is replayed ('upgrade' with the
 * original request, its carried input as the head) and the library's 101 answer is swallowed
 * once (the client has had it); socket.io's sessions are rebuilt by integrations/socketio.ts.
 * One carried raw goes to `claim`. One that nothing takes within claimTimeoutMs stays open and
 * unread, and is counted `unclaimed`: the agent then rolls the update back rather than finish
 * with it dropped (the previous version resumes it untouched). The counts are what happened,
 * in the result and in the agent's report (luo.files.noteRestored).
 * Unhappy paths: not UPDATED (EBUSY), the token was not handed over (ENOENT), an http.Server
 * handed over into a plain one (EINVAL), listen failing (its error); nothing is half-adopted
 * when these are raised.
 *
 * preserveServer on a server that is not listening yet waits for 'listening' (and rejects
 * with listen's error); a TLS server is refused at once (thrown: EOPNOTSUPP).
 */
import net from 'node:net';
import { trace } from '../config.js';
import { fail } from '../errors.js';
import { State } from '../luo/abi.js';
import type { Luo } from '../luo/luo.js';
import { adoptConnection, type Carried } from '../handlers/connection.js';
import { attachToServer, collectYoung, incomingRequest } from '../handlers/node-internals.js';
import { PreservedServer, connectionsOf, isHttp, trackConnection, type RestoredServer, type ServerOptions } from '../handlers/server.js';
import { parseMeta, rememberRequest, type UpgradeMeta } from '../handlers/upgraded.js';
import { isTls } from '../handlers/tls.js';
import { UPGRADED } from '../uapi/connections.js';

/**
 * Preserve a listening server and all its live connections under one token. Not listening
 * yet (listen() not called, or not done): preserved once it listens; the promise says when
 * (and rejects with listen's error).
 */
export function preserveServer(luo: Luo, token: bigint | number, server: net.Server, opts: ServerOptions = {}): Promise<void> {
  // What can be refused at once is (a TLS server: EOPNOTSUPP, thrown).
  if (server.listening || isTls(server)) {
    luo.preserveFile(token, new PreservedServer(server, opts));
    return Promise.resolve();
  }
  return new Promise<void>((resolve, reject) => {
    const onError = (e: Error): void => {
      server.off('listening', onListening);
      reject(e);
    };
    const onListening = (): void => {
      server.off('error', onError);
      try {
        luo.preserveFile(token, new PreservedServer(server, opts));
        resolve();
      } catch (e) {
        reject(e);
      }
    };
    server.once('listening', onListening);
    server.once('error', onError);
  });
}

const CARRIED = Symbol.for('luo.carried');

/**
 * True for a connection (its socket, its request, a ws WebSocket on it) that a previous
 * version handed over: its 'connection' handler runs again in this version, and may want to
 * skip what it does for a new client (a greeting). socket.io sockets say it as
 * `socket.recovered`.
 */
export function isCarried(x: unknown): boolean {
  if (!x || typeof x !== 'object') return false;
  const o = x as { [CARRIED]?: boolean; _socket?: unknown; socket?: unknown };
  return o[CARRIED] === true || (o._socket !== x && isCarriedOwn(o._socket)) || isCarriedOwn(o.socket);
}
const isCarriedOwn = (x: unknown): boolean => Boolean(x && typeof x === 'object' && (x as { [CARRIED]?: boolean })[CARRIED] === true);

/** What a reclaimer gets for one carried upgraded connection. */
export interface ReclaimArgs {
  server: net.Server;
  socket: net.Socket;
  /** The upgrade request, made again. */
  req: import('node:http').IncomingMessage;
  /** Its carried input: the head of the replayed upgrade. */
  head: Buffer;
  meta: UpgradeMeta;
  /** Call right before the library answers the upgrade: its 101 is swallowed ('taken'). */
  handshake(): Promise<Outcome>;
}

/** Something that takes an upgraded connection back in the next version (socket.io). */
export interface Reclaimer {
  /** Takes connections whose meta.owner is this name. */
  readonly owner: string;
  /** Rebuild the owner's state; resolves once the connection is taken, throws (the reason)
   *  when this version will not take it. */
  reclaim(a: ReclaimArgs): Promise<void>;
}
const reclaimers = new Map<string, Reclaimer>();
export function registerReclaimer(r: Reclaimer): void {
  reclaimers.set(r.owner, r);
}

/** What restoreServer did with the connections handed over. */
export interface RestoredCounts {
  /** Connections handed over (all of them adopted or accounted for below). */
  connections: number;
  /** Bytes carried read-but-unconsumed, and written-but-unsent. */
  unread: number;
  unsent: number;
  /** Upgraded connections among them (WebSockets...), and how they ended here: taken by their
   *  owner or by `claim`, refused by this version's code (it answered them itself: an error
   *  status, a close), or unclaimed (nothing took them: kept open, unread). */
  upgraded: number;
  taken: number;
  refused: number;
  unclaimed: number;
}

export interface RestoreOptions {
  /** At most this many connections adopted per event-loop turn (default 256)... */
  batch?: number;
  /** ...and for at most this long, so requests keep being served meanwhile (default: 1 ms in a
   *  successor, where a connection that gets input is adopted at the next slice, so the
   *  slice bounds its wait; 4 ms after an exec, where it waits for its turn in table order,
   *  so the adoption's throughput does). */
  sliceMs?: number;
  /** Called for each adopted connection before the server sees it. */
  onConnection?: (s: net.Socket) => void;
  /**
   * Take a connection yourself: return true and the server never sees it (it stays tracked,
   * so the next update carries it again). For connections carried raw (preserveServer's
   * upgraded: 'raw'), which an http.Server would answer with 400. Connections a library
   * carried (ws, socket.io) go back to that library instead.
   */
  claim?: (s: net.Socket) => boolean;
  /** How long a replayed upgrade may take to be answered by this version (default 2000 ms). */
  claimTimeoutMs?: number;
}

/**
 * In the next image: make `server` listen on the handed-over socket, then give it every
 * handed-over connection as if just accepted. Resolves once all are adopted; the server
 * serves from the first moment.
 */
export async function restoreServer(luo: Luo, token: bigint | number, server: net.Server, opts: RestoreOptions = {}): Promise<RestoredCounts> {
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
  // follow in slices, those that get input meanwhile first.
  const table = st.connections;
  // Where the idle loop starts reading the readiness log: taken before ready() drains it, so
  // that a connection reported between the two is not lost (reported twice at worst: a busy
  // one adopted below is skipped there).
  const log = st.readySince(0);
  let since = log?.next ?? 0;
  const ready = st.ready();
  // The order of adoption: busy ones (ready, or with bytes carried) first.
  for (const i of table.bytes.keys()) ready[i] = 1;
  const { order, busy: nBusy } = busyFirst(ready);
  trace(`restoreServer: ${table.count} connections, ${nBusy} busy first`);
  // Track the server's connections from now on (the ones emitted below among them), so the
  // next update carries them again.
  connectionsOf(server);
  // Adopt in slices of at most `sliceMs` (and `batch` connections), yielding to the event
  // loop in between: whatever is already adopted is served while the rest waits its turn.
  const batch = opts.batch ?? 256;
  const sliceMs = opts.sliceMs ?? (log ? 1 : 4);
  const allowHalfOpen = (server as unknown as { allowHalfOpen?: boolean }).allowHalfOpen;
  const counts: RestoredCounts = { connections: table.count, unread: table.unread, unsent: table.unsent, upgraded: 0, taken: 0, refused: 0, unclaimed: 0 };
  const replays: Array<Promise<Outcome>> = [];
  let serveAt = 1;
  const claimMs = opts.claimTimeoutMs ?? 2000;
  /** Connection `k` of the table, adopted (or its upgrade replayed). */
  const adopt = (k: number): void => {
    const c = table.at(k);
    if (c.flags & UPGRADED) {
      counts.upgraded++;
      replays.push(reclaim(server, c, allowHalfOpen, opts, claimMs));
    } else {
      const s = adoptConnection(c, { allowHalfOpen });
      attachToServer(server, s);
      opts.onConnection?.(s);
      if (opts.claim?.(s)) trackConnection(server, s);
      else server.emit('connection', s);
    }
  };
  // The busy ones (input waiting at the handover, or bytes carried), in batches that double,
  // up to BUSY_BATCH_MAX.
  let busyBatch = 1;
  for (let i = 0; i < nBusy; i++) {
    adopt(order[i]!);
    if (i === 0) trace('restoreServer: first adopted');
    if (i + 1 === serveAt || i === nBusy - 1) {
      // Serve the busy ones adopted so far: let the loop poll (and read them) before adopting
      // more, in batches that double (1, 2, 4, ...) up to BUSY_BATCH_MAX: the first is served
      // after one adoption, not after all of them, one adopted early is served again after at
      // most that many more (1 500 busy ones piled up in a slow pause under load: batches of
      // 512 and 1 024 held the busiest clients' next requests 150 ms), and the last busy one
      // before any idle one. One setImmediate
      // is not enough: queued from outside the check phase (the restore runs from a module's
      // top-level await, an I/O callback, a timer) it runs in this iteration's check phase,
      // before any poll; queued from inside it, the next immediate runs only after the next
      // iteration's poll.
      busyBatch = Math.min(busyBatch * 2, BUSY_BATCH_MAX);
      serveAt += busyBatch;
      if (i === nBusy - 1) trace('restoreServer: busy ones adopted');
      await new Promise((r) => setImmediate(() => setImmediate(r)));
      if (i === nBusy - 1) trace('restoreServer: busy ones served');
    }
  }
  // The others, in slices. Each slice first adopts those that have input now (a request that
  // came after the handover must not wait for its connection's turn in table order: at 10 000
  // connections that was up to 1.5 s under load), found in O(ready) among the fds watched
  // since before the freeze, then the next ones in table order. A connection adopted for its
  // input is served at the loop's next poll, so a slice that adopted one ends soon after (a
  // few more in table order, so that adoption always moves on), and one that gets input in
  // the middle of a slice ends that slice: a request waits for a few adoptions, not for a
  // whole slice of idle ones.
  const done = new Uint8Array(table.count);
  for (let i = 0; i < nBusy; i++) done[order[i]!] = 1;
  let left = table.count - nBusy;
  let cursor = nBusy;
  let indexOfFd: Int32Array | null = null;
  let first = nBusy === 0;
  let waiting: number[] = [];
  let head = 0;
  let inSlice = 0;
  let young = 0;
  /** Adopt connection `k` in this slice, unless it was already. */
  const adoptOnce = (k: number): void => {
    if (done[k]) return;
    done[k] = 1;
    left--;
    adopt(k);
    inSlice++;
  };
  /** Queue the connections reported ready since the last look; true when there are any. */
  const lookForInput = (): boolean => {
    const now = st.readySince(since);
    if (!now) return false;
    since = now.next;
    if (!now.fds.length) return false;
    indexOfFd ??= indexByFd(table.fds);
    const before = waiting.length;
    for (const fd of now.fds) {
      const k = fd < indexOfFd.length ? indexOfFd[fd]! : -1;
      if (k >= 0 && !done[k]) waiting.push(k);
    }
    return waiting.length > before;
  };
  while (left > 0) {
    const sliceStart = performance.now();
    inSlice = 0;
    const more = (): boolean => inSlice < batch && performance.now() - sliceStart < sliceMs;
    /** Adopt the queued ones with input (as the slice allows); true when it adopted any. */
    const adoptWaiting = (): boolean => {
      const from = inSlice;
      while (head < waiting.length && more()) adoptOnce(waiting[head++]!);
      if (head === waiting.length) {
        waiting = [];
        head = 0;
      }
      return inSlice > from;
    };
    lookForInput();
    let served = adoptWaiting();
    for (let n = 0; cursor < order.length && more() && !(served && n >= INPUT_CHECK_EVERY); n++) {
      adoptOnce(order[cursor++]!);
      if ((n + 1) % INPUT_CHECK_EVERY === 0 && !served && lookForInput()) served = adoptWaiting() || served;
    }
    if (first) trace('restoreServer: first adopted');
    first = false;
    if (left === 0) break;
    // Every YOUNG_EVERY adoptions a scavenge copies what they allocated (the adopted sockets'
    // state, all of which survives): a few milliseconds, where one V8 starts on its own
    // with its young generation full of it stood still for 20-30 ms at 10 000 connections.
    // (After every slice, it cost as much as the slice's adoptions: 3-4 ms each time.)
    young += inSlice;
    if (young >= YOUNG_EVERY) {
      young = 0;
      collectYoung();
    }
    await new Promise((r) => setImmediate(r));
  }
  trace('restoreServer: all adopted');
  for (const o of await Promise.all(replays)) counts[o]++;
  if (counts.upgraded) trace(`restoreServer: upgraded ${counts.upgraded}: ${counts.taken} taken, ${counts.refused} refused, ${counts.unclaimed} unclaimed`);
  luo.files.noteRestored(BigInt(token), { connections: counts.connections, upgraded: counts.upgraded, taken: counts.taken, refused: counts.refused, unclaimed: counts.unclaimed });
  return counts;
}

/** The most busy connections adopted between two polls (the batches double up to it). */
const BUSY_BATCH_MAX = 64;

/** Adoptions between two young-generation collections of restoreServer's own. */
const YOUNG_EVERY = 256;

/** How many idle connections a slice adopts between two looks for input (each an epoll_wait
 *  on the readiness set: a few µs), and at most after adopting connections for their input. */
const INPUT_CHECK_EVERY = 16;

/** Each fd's index in `fds` (-1: not one of them). */
function indexByFd(fds: Int32Array): Int32Array {
  let max = 0;
  for (let i = 0; i < fds.length; i++) if (fds[i]! > max) max = fds[i]!;
  const out = new Int32Array(max + 1).fill(-1);
  for (let i = 0; i < fds.length; i++) out[fds[i]!] = i;
  return out;
}

/** The order of adoption: the indices marked 1 in `ready` first, then the others, each in
 *  table order. (Warmed before the freeze: src/warm.ts.) */
export function busyFirst(ready: Uint8Array): { order: Int32Array; busy: number } {
  const n = ready.length;
  const order = new Int32Array(n);
  let busy = 0;
  let k = n;
  for (let i = n - 1; i >= 0; i--) if (ready[i] !== 1) order[--k] = i;
  for (let i = 0; i < n; i++) if (ready[i] === 1) order[busy++] = i;
  return { order, busy };
}

export type Outcome = 'taken' | 'refused' | 'unclaimed';

/**
 * An upgraded connection back to its owner: `claim` for one carried raw, the registered
 * reclaimer for its library's state (socket.io), else its upgrade replayed on the server.
 */
async function reclaim(server: net.Server, c: Carried, allowHalfOpen: boolean | undefined, opts: RestoreOptions, claimMs: number): Promise<Outcome> {
  const meta = parseMeta(c.meta);
  const raw = !meta || meta.owner === 'raw' || !meta.req;
  const s = adoptConnection(c, { allowHalfOpen, upgraded: !raw });
  attachToServer(server, s);
  (s as unknown as Record<symbol, boolean>)[CARRIED] = true;
  opts.onConnection?.(s);
  if (raw) {
    // Carried as bytes: the service takes it (its input is in the read buffer).
    s.unshift(c.unread);
    if (opts.claim?.(s)) {
      trackConnection(server, s);
      return 'taken';
    }
    return 'unclaimed';
  }
  rememberRequest(s, meta.req!);
  trackConnection(server, s);
  const req = incomingRequest(s, meta.req!);
  (req as unknown as Record<symbol, boolean>)[CARRIED] = true;
  const reclaimer = reclaimers.get(meta.owner);
  if (reclaimer) {
    try {
      const work = reclaimer.reclaim({ server, socket: s, req, head: c.unread, meta, handshake: () => handshakeAnswered(s, claimMs) });
      // A reclaimer that never finishes is as good as none.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([work, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`not taken within ${claimMs} ms`)), claimMs)))]).finally(() => clearTimeout(timer));
      return 'taken';
    } catch (e) {
      trace(`restoreServer: ${meta.owner} refused a connection: ${(e as Error).message}`);
      return s.destroyed ? 'refused' : 'unclaimed';
    }
  }
  if (server.listenerCount('upgrade') === 0) return 'unclaimed';
  const answered = handshakeAnswered(s, claimMs);
  server.emit('upgrade', req, s, c.unread);
  return answered;
}

/**
 * The next version's answer to a replayed upgrade: its library writes the 101 it would write
 * a new client, swallowed here once (this client had it from the previous version): 'taken'.
 * Anything else written first, or the socket closed: 'refused' (this version's code said no).
 * Nothing within `ms`: 'unclaimed'.
 */
function handshakeAnswered(s: net.Socket, ms: number): Promise<Outcome> {
  return new Promise<Outcome>((resolve) => {
    const write = s.write;
    let done = false;
    const end = (o: Outcome): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.off('close', onClose);
      if (s.write !== write) s.write = write;
      resolve(o);
    };
    const onClose = (): void => end('refused');
    const timer = setTimeout(() => end('unclaimed'), ms);
    s.once('close', onClose);
    s.write = function (this: net.Socket, chunk: unknown, ...rest: unknown[]): boolean {
      const head = typeof chunk === 'string' ? chunk.slice(0, 13) : Buffer.isBuffer(chunk) || chunk instanceof Uint8Array ? Buffer.from(chunk.buffer, chunk.byteOffset, Math.min(13, chunk.byteLength)).toString('latin1') : '';
      if (head === 'HTTP/1.1 101 ') {
        end('taken');
        const cb = rest.find((x) => typeof x === 'function') as (() => void) | undefined;
        if (cb) process.nextTick(cb);
        return true;
      }
      end('refused');
      return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof s.write;
  });
}
