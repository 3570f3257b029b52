/*
 * register: drop-in mode. `LUO_NAME=api node --import luo/register app.js` runs an unmodified
 * app under luo; `luo update --name api [--successor] [-- CMD...]` replaces it.
 *
 * What it does, once per process, before the app's own code runs:
 *   - net.Server.prototype.listen is wrapped. A listen on an address (a port, a host and a
 *     port, a Unix path) is keyed by what the app asked for ("tcp *:8080", "unix /run/x.sock";
 *     port 0 by its order among such calls), and that key names its token. In a first version
 *     the server listens as usual and is preserved, with every connection, once it listens. In a
 *     next version the same listen() call adopts the handed-over socket instead of binding
 *     (the kernel never stops accepting), and its connections are restored into the server
 *     (integrations/server.ts): ws and socket.io connections go back to their library.
 *     A listen on an fd or a handle is left alone.
 *   - A TLS server's listening socket is carried, its connections are not (their TLS state
 *     lives in process memory): said on stderr when it listens.
 *   - socket.io servers are found as the app creates them (integrations/socketio.ts).
 *   - Boot: a cold start boots at once. A next version boots at its first listen() (a successor
 *     has done its start-up by then, while the previous version still served) or after
 *     LUO_LISTEN_WAIT_MS (default 2000) if it never listens.
 *   - The control device starts by itself once the app is up: in a first version after its
 *     first listen() (or the wait), in a next version once every handed-over listener is back
 *     (or the wait: a listener this version never listens on again is released at FINISH, and
 *     the agent's report names it).
 * Unhappy paths: a listen while an update is under way (PREPARED, FROZEN) is served but not
 * carried (said on stderr); a restore that fails is the server's 'error' event, as a failed
 * listen would be; a corrupt handover is luo's one-line fatal (exit 70), as with the API.
 * LUO_ENABLE=0 turns all of it off (the app runs as it would without luo). Worker threads
 * (which Node gives the same --import) are left alone.
 */
import net from 'node:net';
import { isMainThread } from 'node:worker_threads';
import { resolveConfig } from './config.js';
import { State } from './luo/abi.js';
import type { Luo } from './luo/luo.js';
import { boot, pendingHandover, startDevice } from './index.js';
import { preserveServer, restoreServer } from './integrations/server.js';
import { watchSocketIo } from './integrations/socketio.js';
import { fdOf } from './handlers/node-internals.js';
import { isTls } from './handlers/tls.js';

const PREFIX = 0x4c55_0000n << 32n; // "LU": tokens drop-in mode names

/** FNV-1a, 32 bits: a listen key's token. */
export function tokenOfKey(key: string): bigint {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return PREFIX | BigInt(h);
}

type ListenArgs = unknown[];

/** What the app asked a listen() for: its key, or null (an fd, a handle: not ours to carry). */
export function listenKey(args: ListenArgs, ephemeral: Map<string, number>): string | null {
  let a0 = args[0];
  if (a0 !== null && typeof a0 === 'object') {
    const o = a0 as { port?: unknown; host?: unknown; path?: unknown; fd?: unknown; _handle?: unknown; handle?: unknown };
    if (o.fd !== undefined || o._handle !== undefined || o.handle !== undefined) return null;
    if (typeof o.path === 'string') return `unix ${o.path}`;
    return tcpKey(o.port, o.host, ephemeral);
  }
  if (typeof a0 === 'string' && !/^\d+$/.test(a0)) return `unix ${a0}`;
  if (typeof a0 === 'function') a0 = undefined;
  const host = typeof args[1] === 'string' ? args[1] : undefined;
  return tcpKey(a0, host, ephemeral);
}

function tcpKey(port: unknown, host: unknown, ephemeral: Map<string, number>): string {
  const p = port === undefined || port === null ? 0 : Number(port);
  const h = typeof host === 'string' && host ? host : '*';
  if (p !== 0) return `tcp ${h}:${p}`;
  const n = (ephemeral.get(h) ?? 0) + 1;
  ephemeral.set(h, n);
  return `tcp ${h}:0#${n}`;
}

/** The callback a listen() was given, if any (always its last function argument). */
const callbackOf = (args: ListenArgs): (() => void) | undefined => {
  const f = args[args.length - 1];
  return typeof f === 'function' ? (f as () => void) : undefined;
};

const warn = (msg: string): void => void process.stderr.write(`luo: ${msg}\n`);

function install(): void {
  // Node runs --import preloads in every worker thread too (luo's device worker and guard
  // watchdog among them): drop-in mode is the main thread's.
  if (!isMainThread) return;
  const config = resolveConfig({});
  if (!config.enabled) return;
  const waitMs = Number(process.env.LUO_LISTEN_WAIT_MS ?? 2000);
  const pending = pendingHandover();
  let luo: Luo | null = null;
  const ephemeral = new Map<string, number>();
  /** Handed-over listener tokens not listened on again yet (a next version). */
  let awaiting: Set<bigint> | null = null;
  let device = false;

  const startDeviceOnce = (): void => {
    if (device || !luo) return;
    device = true;
    startDevice(luo);
  };
  const bootNow = (): Luo => {
    if (luo) return luo;
    luo = boot();
    if (luo.state === State.UPDATED) {
      awaiting = new Set(luo.files.incomingTokens.filter((t) => (t & (0xffff_ffffn << 32n)) === PREFIX));
      if (awaiting.size === 0) setImmediate(startDeviceOnce);
    }
    setTimeout(startDeviceOnce, waitMs).unref();
    return luo;
  };
  if (!pending) bootNow();
  else setTimeout(bootNow, waitMs).unref();

  watchSocketIo();

  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (this: net.Server, ...args: ListenArgs): net.Server {
    const key = listenKey(args, ephemeral);
    if (key === null) return (listen as (...a: ListenArgs) => net.Server).apply(this, args);
    const l = bootNow();
    const token = tokenOfKey(key);
    const tls = isTls(this);
    if (l.state === State.UPDATED && awaiting?.has(token)) {
      awaiting.delete(token);
      const cb = callbackOf(args);
      if (cb) this.once('listening', cb);
      const server = this;
      void (async () => {
        try {
          if (tls) {
            const fd = (await l.restoreFile<{ fd: number } | number>(token)) as { fd: number } | number;
            await new Promise<void>((resolve, reject) => {
              server.once('error', reject);
              server.listen({ fd: typeof fd === 'number' ? fd : fd.fd }, () => {
                server.off('error', reject);
                resolve();
              });
            });
          } else await restoreServer(l, token, server);
          carry(l, token, server, key, tls);
        } catch (e) {
          server.emit('error', e);
        } finally {
          if (awaiting?.size === 0) startDeviceOnce();
        }
      })();
      return this;
    }
    const r = (listen as (...a: ListenArgs) => net.Server).apply(this, args);
    this.once('listening', () => {
      carry(l, token, this, key, tls);
      if (l.state !== State.UPDATED) setImmediate(startDeviceOnce);
    });
    return r;
  };
}

/** Preserve a listening server under its key's token (a TLS one: its listening fd only). */
function carry(luo: Luo, token: bigint, server: net.Server, key: string, tls: boolean): void {
  if (luo.state !== State.NORMAL && luo.state !== State.UPDATED) {
    warn(`${key} started listening during an update (${luo.stateName}): it is served, but not carried to the next version`);
    return;
  }
  try {
    if (tls) {
      warn(`${key} is a TLS server: its listening socket is carried to the next version, its connections are not (their TLS state lives in this process's memory); at each update they close`);
      luo.preserveFile(token, fdOf(server));
    } else void preserveServer(luo, token, server).catch((e: Error) => warn(`${key} cannot be carried: ${e.message}`));
  } catch (e) {
    warn(`${key} cannot be carried: ${(e as Error).message}`);
  }
}

install();
