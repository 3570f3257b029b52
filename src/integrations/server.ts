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
 * A connection the caller claims (opts.claim, e.g. an upgraded WebSocket) goes to the caller
 * instead of the server, and stays tracked. Unhappy paths: not UPDATED (EBUSY), the token was
 * not handed over (ENOENT), an http.Server handed over into a plain one (EINVAL), listen
 * failing (its error); nothing is half-adopted when these are raised.
 */
import net from 'node:net';
import { trace } from '../config.js';
import { fail } from '../errors.js';
import { State } from '../luo/abi.js';
import type { Luo } from '../luo/luo.js';
import { adoptConnection } from '../handlers/connection.js';
import { attachToServer } from '../handlers/node-internals.js';
import { PreservedServer, connectionsOf, isHttp, trackConnection, type RestoredServer, type ServerOptions } from '../handlers/server.js';

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
  const ready = st.ready();
  // The order of adoption: busy ones (ready, or with bytes carried) first.
  for (const i of table.bytes.keys()) ready[i] = 1;
  const order = new Int32Array(table.count);
  let nBusy = 0;
  let k = table.count;
  for (let i = table.count - 1; i >= 0; i--) if (ready[i] !== 1) order[--k] = i;
  for (let i = 0; i < table.count; i++) if (ready[i] === 1) order[nBusy++] = i;
  trace(`restoreServer: ${table.count} connections, ${nBusy} busy first`);
  // Track the server's connections from now on (the ones emitted below among them), so the
  // next update carries them again.
  connectionsOf(server);
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
    if (opts.claim?.(s)) trackConnection(server, s);
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
