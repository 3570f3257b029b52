/*
 * examples/kv/service: a small stateful service, one port for an HTTP API and two upgraded
 * channels, whose state a live update keeps. Two versions share this body (v1.ts, v2.ts).
 *
 *   GET/PUT/DELETE /kv/<key>   the key-value store (values ≤ 88 bytes); every response says
 *                              which version served it (x-version), v2 also each key's
 *                              revision (x-rev)
 *   GET /stats                 JSON: version, store format, entries, checksum, verification
 *   GET /ws  (Upgrade: websocket)   messages {"seq":n,...} are acknowledged
 *                              {"ack":n,"count":…,"session":…}; the per-connection session
 *                              (id, messages counted) survives updates
 *   GET /echo (Upgrade: tcp-echo)   a raw byte stream echoed back
 *
 * Modes (--mode): 'luo' (default) keeps everything across `luo update`; 'plain' keeps
 * nothing (what pm2 reload gives); 'json' writes the store to a JSON file on SIGTERM and
 * reads it back at start (what most services do today).
 *
 * Lifecycle under luo:
 *   successor    before boot(), while the previous version still serves: warm the HTTP path
 *                (throwaway requests on a loopback server, no state touched).
 *   cold start   listen, create the store (luo.map, store.ts) and seed it, serve, start the
 *                control device. luo hands the store's maps over; subsystem "kv-sessions"
 *                hands over the sessions ("kv-store" holds the background scan back).
 *   FREEZE       "kv-sessions" stops consuming WebSocket bytes and records each session
 *                with the bytes its parser holds (a partial frame), so the channel is handed
 *                over at a frame boundary; bytes still unread stay in the socket for luo to
 *                carry. At FROZEN the store's checksum is printed ("handover" line).
 *   PREPARE      the background checksum scan waits (no CPU taken from the update).
 *   CANCEL       consumption and the scan resume where they stopped; nothing was lost.
 *   next image   reopen the store where it is (v2 moves format 1 to 2; v1 opens format 2 and
 *                leaves its revisions map, released at FINISH), adopt the
 *                listener and every connection (WebSocket and echo connections are claimed
 *                back by their peer address), serve, start the control device, then verify
 *                the store's checksum against its records in the background.
 * Unhappy paths: a bad request gets 400/404/413 and the connection lives on; a protocol
 * error on a WebSocket closes that one connection (1002/1009); a store that does not open
 * (a damaged map, an unknown format) stops the service with a message (exit 1), never serves
 * wrong data.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { boot, pendingHandover, preserveServer, restoreServer, startDevice, State, type Luo } from 'luo';
import { Gate, KvStore, StoreFullError, heapMaps, seed } from './store.js';
import { FrameParser, MessageAssembler, OP, WsProtocolError, acceptKey, encodeFrame } from './ws.js';

export interface ServiceArgs {
  mode: 'luo' | 'plain' | 'json';
  port: number;
  host: string;
  name?: string;
  rundir?: string;
  entries: number;
  stateBytes: number;
  stateFile?: string;
}

export function parseArgs(argv: string[]): ServiceArgs {
  const get = (n: string): string | undefined => {
    const i = argv.indexOf(`--${n}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const entries = Number(get('entries') ?? 300_000);
  const a: ServiceArgs = {
    mode: (get('mode') ?? 'luo') as ServiceArgs['mode'],
    port: Number(get('port') ?? 0),
    host: get('host') ?? '127.0.0.1',
    name: get('name'),
    rundir: get('rundir'),
    entries,
    stateBytes: Number(get('state-bytes') ?? Math.max(8 * 2 ** 20, Math.ceil(entries / 0.6) * 128)),
    stateFile: get('state-file'),
  };
  if (!['luo', 'plain', 'json'].includes(a.mode)) throw new Error(`--mode must be luo, plain or json, not ${a.mode}`);
  if (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535) throw new Error(`--port ${get('port')} is not a port`);
  if (!Number.isInteger(entries) || entries < 0) throw new Error(`--entries ${get('entries')} is not a count`);
  if (a.mode === 'json' && !a.stateFile) throw new Error('--mode json needs --state-file FILE');
  return a;
}

interface Session { id: number; kind: 'ws' | 'echo'; count: number; lastSeq: number; pending?: Buffer; partial?: { opcode: number; parts: Buffer[] } }
interface Live { session: Session; socket: net.Socket; onData?: (b: Buffer) => void; parser?: FrameParser; asm?: MessageAssembler }
interface SavedSession extends Omit<Session, 'pending' | 'partial'> { peer: string; pending: string; partial: { opcode: number; parts: string[] } }

const say = (o: Record<string, unknown>): void => {
  // Synchronous: the FROZEN line must be out before the exec.
  fs.writeSync(1, JSON.stringify(o) + '\n');
};
const peerOf = (s: net.Socket): string => `${s.remoteAddress}:${s.remotePort}`;

export async function runService(version: 1 | 2, args: ServiceArgs): Promise<void> {
  const tag = `v${version}`;
  const t0 = performance.now();
  // A successor: the running version serves until boot() below, so warm the HTTP path now
  // (its first answers after the handover are then not the first of this process).
  if (args.mode === 'luo' && pendingHandover() === 'successor') await warmHttp();
  const luo: Luo | null = args.mode === 'luo' ? boot({ ...(args.name ? { name: args.name } : {}), ...(args.rundir ? { rundir: args.rundir } : {}) }) : null;
  const updated = luo?.state === State.UPDATED;
  const live = new Map<net.Socket, Live>();
  let nextSession = 1;
  let verified: { ok: boolean; expected: string; computed: string; ms: number; generation: number } | null = null;
  let migrated: { from: number; to: number; ms: number } | null = null;
  let storeOpenMs = 0;

  // ------------------------------------------------------------------ the store
  let store: KvStore;
  const background = new Gate();
  let incomingSessions = new Map<string, SavedSession>();
  if (luo) {
    let sessionsPayload = 0n;
    await luo.registerSubsystem({
      name: 'kv-store',
      // An update is coming: background work (the checksum scan) waits, so that it takes no
      // CPU from the freeze or the next image; it goes on if the update is cancelled (and if it
      // is not, the next image verifies the store itself). The store itself is in luo.map:
      // luo hands it over.
      prepare: () => void background.close(),
      cancel: () => background.reopen(),
    });
    let sessionsBlock: { addr: number; size: number } | null = null;
    // What a FREEZE stopped, so that CANCEL resumes exactly that (a CANCEL can come before any
    // FREEZE: after PREPARE alone, or when a successor fails to start).
    let stopped: Live[] = [];
    await luo.registerSubsystem({
      name: 'kv-sessions',
      freeze: () => {
        const saved: SavedSession[] = [];
        stopped = [...live.values()];
        for (const l of live.values()) {
          if (l.onData) l.socket.off('data', l.onData);
          l.socket.pause();
          const p = l.asm?.partial ?? { opcode: 0, parts: [] };
          saved.push({
            peer: peerOf(l.socket), id: l.session.id, kind: l.session.kind, count: l.session.count, lastSeq: l.session.lastSeq,
            pending: (l.parser?.pending() ?? Buffer.alloc(0)).toString('base64'),
            partial: { opcode: p.opcode, parts: p.parts.map((b) => b.toString('base64')) },
          });
        }
        const blob = Buffer.from(JSON.stringify({ nextSession, sessions: saved }));
        const size = 8 + blob.length;
        const addr = luo.allocPreserve(size);
        const v = luo.view(addr, size);
        new DataView(v.buffer, v.byteOffset, 8).setBigUint64(0, BigInt(blob.length), true);
        v.set(blob, 8);
        sessionsBlock = { addr, size };
        return addr;
      },
      cancel: () => {
        for (const l of stopped) {
          if (l.socket.destroyed) continue;
          if (l.onData) l.socket.on('data', l.onData);
          l.socket.resume();
        }
        stopped = [];
        if (sessionsBlock) luo.unpreserveFree(sessionsBlock.addr, sessionsBlock.size);
        sessionsBlock = null;
      },
      boot: (data) => void (sessionsPayload = data),
    });
    // The store: luo.map's, opened where the previous version left it (after kv-store and
    // kv-sessions registered: their PREPARE and FREEZE come before luo's state).
    const to = performance.now();
    store = KvStore.open({ map: (name, o) => luo.map(name, o), drop: (name) => void luo.forget(name) }, version, updated ? undefined : KvStore.capacityFor(args.stateBytes));
    if (updated) {
      store.updates = store.updates + 1;
      storeOpenMs = Math.round((performance.now() - to) * 1000) / 1000;
      if (store.migrated) migrated = { ...store.migrated, ms: storeOpenMs };
    } else seed(store, args.entries);
    if (updated && sessionsPayload) {
      const addr = Number(sessionsPayload);
      const v = luo.view(addr, 8);
      const len = Number(new DataView(v.buffer, v.byteOffset, 8).getBigUint64(0, true));
      const saved = JSON.parse(Buffer.from(luo.view(addr + 8, len)).toString()) as { nextSession: number; sessions: SavedSession[] };
      luo.kho.restoreFree(addr);
      nextSession = saved.nextSession;
      incomingSessions = new Map(saved.sessions.map((s) => [s.peer, s]));
    }
    luo.on('state', (s: number) => {
      if (s === State.FROZEN) say({ event: 'handover', version: tag, pid: process.pid, checksum: store.checksum, entries: store.size, connections: live.size });
    });
  } else {
    store = KvStore.open(heapMaps(), version, KvStore.capacityFor(args.stateBytes));
    if (args.mode === 'json' && fs.existsSync(args.stateFile!)) {
      const tl = performance.now();
      const n = loadJson(store, args.stateFile!);
      say({ event: 'loaded', entries: n, ms: Math.round(performance.now() - tl) });
    } else seed(store, args.entries);
  }

  // ------------------------------------------------------------------ HTTP
  const reply = (res: http.ServerResponse, status: number, body: string | Buffer = '', extra: Record<string, string | number> = {}): void => {
    const b = typeof body === 'string' ? Buffer.from(body) : body;
    res.writeHead(status, { 'x-version': tag, 'content-length': b.length, ...extra }).end(b);
  };
  const server = http.createServer({ keepAliveTimeout: 120_000 }, (req, res) => {
    const url = req.url ?? '/';
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        if (url.startsWith('/kv/')) {
          const key = Buffer.from(decodeURIComponent(url.slice(4)));
          if (req.method === 'GET') {
            const r = store.get(key);
            if (!r) return void reply(res, 404, 'not found\n');
            return void reply(res, 200, r.value, version === 2 ? { 'x-rev': r.rev } : {});
          }
          if (req.method === 'PUT') {
            const rev = store.put(key, Buffer.concat(chunks));
            return void reply(res, 200, 'ok\n', version === 2 ? { 'x-rev': rev } : {});
          }
          if (req.method === 'DELETE') return void reply(res, store.delete(key) ? 200 : 404);
          return void reply(res, 405);
        }
        if (url === '/stats') {
          return void reply(res, 200, JSON.stringify({
            version: tag, pid: process.pid, mode: args.mode, format: store.format, entries: store.size, capacity: store.capacity,
            bytes: store.bytes, checksum: store.checksum, updates: store.updates, verified, migrated,
            sessions: live.size, liveupdate: luo?.liveupdateNumber ?? 0,
          }), { 'content-type': 'application/json' });
        }
        reply(res, 404, 'not found\n');
      } catch (e) {
        if (e instanceof RangeError) return void reply(res, 413, `${e.message}\n`);
        if (e instanceof StoreFullError) return void reply(res, 507, `${e.message}\n`);
        reply(res, 500, `${(e as Error).message}\n`);
      }
    });
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const up = String(req.headers.upgrade ?? '').toLowerCase();
    if (req.url === '/ws' && up === 'websocket' && typeof req.headers['sec-websocket-key'] === 'string') {
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(req.headers['sec-websocket-key'])}\r\nx-version: ${tag}\r\n\r\n`);
      attach(socket, { id: nextSession++, kind: 'ws', count: 0, lastSeq: 0 }, head);
    } else if (req.url === '/echo' && up === 'tcp-echo') {
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: tcp-echo\r\nConnection: Upgrade\r\nx-version: ${tag}\r\n\r\n`);
      attach(socket, { id: nextSession++, kind: 'echo', count: 0, lastSeq: 0 }, head);
    } else {
      socket.end(`HTTP/1.1 400 Bad Request\r\nx-version: ${tag}\r\n\r\n`);
    }
  });

  function attach(socket: net.Socket, session: Session, head?: Buffer): void {
    const l: Live = { session, socket };
    live.set(socket, l);
    socket.on('error', () => {});
    socket.once('close', () => live.delete(socket));
    if (session.kind === 'echo') {
      l.onData = (b) => void socket.write(b);
      socket.on('data', l.onData);
      if (head?.length) socket.write(head);
      return;
    }
    l.parser = new FrameParser(true);
    l.asm = new MessageAssembler();
    if (session.partial) l.asm.restore(session.partial);
    l.onData = (b) => {
      let frames;
      try {
        frames = l.parser!.push(b);
      } catch (e) {
        const code = e instanceof WsProtocolError ? e.closeCode : 1002;
        const body = Buffer.alloc(2);
        body.writeUInt16BE(code);
        socket.end(encodeFrame(OP.CLOSE, body));
        socket.off('data', l.onData!);
        return;
      }
      for (const f of frames) {
        let m;
        try {
          m = l.asm!.add(f);
        } catch {
          socket.destroy();
          return;
        }
        if (!m) continue;
        if (m.opcode === OP.PING) socket.write(encodeFrame(OP.PONG, m.data));
        else if (m.opcode === OP.CLOSE) {
          socket.end(encodeFrame(OP.CLOSE, m.data.subarray(0, 2)));
          return;
        } else if (m.opcode === OP.TEXT) {
          let seq = -1;
          try {
            seq = Number((JSON.parse(m.data.toString()) as { seq?: unknown }).seq);
          } catch { /* not JSON: acknowledged with seq -1 */ }
          session.count++;
          session.lastSeq = seq;
          socket.write(encodeFrame(OP.TEXT, Buffer.from(JSON.stringify({ ack: seq, count: session.count, session: session.id, v: tag }))));
        }
      }
    };
    socket.on('data', l.onData);
    if (session.pending?.length) l.onData(session.pending);
    if (head?.length) l.onData(head);
  }

  // ------------------------------------------------------------------ serve
  const verifying = luo && updated ? store.verify(4096, 100, background) : null;
  if (luo && updated) {
    const r = await restoreServer(luo, 1, server, {
      claim: (s) => {
        const saved = incomingSessions.get(peerOf(s));
        if (!saved) return false;
        attach(s, {
          id: saved.id, kind: saved.kind, count: saved.count, lastSeq: saved.lastSeq,
          pending: Buffer.from(saved.pending, 'base64'),
          partial: { opcode: saved.partial.opcode, parts: saved.partial.parts.map((p) => Buffer.from(p, 'base64')) },
        });
        return true;
      },
    });
    say({ event: 'ready', version: tag, pid: process.pid, updated: true, connections: r.connections, sessions: live.size, carriedBytes: r.unread + r.unsent, entries: store.size, bytes: store.bytes, format: store.format, migrated, storeOpenMs, bootMs: Math.round(performance.now() - t0) });
  } else {
    await listenRetrying(server, args.port, args.host);
    const port = (server.address() as net.AddressInfo).port;
    say({ event: 'ready', version: tag, pid: process.pid, updated: false, port, entries: store.size, format: store.format, bytes: store.bytes, bootMs: Math.round(performance.now() - t0), rundir: luo?.config.rundir });
  }
  if (luo) {
    // Its WebSocket and echo connections are its own (not ws's): carried raw, taken back by
    // restoreServer's claim above.
    void preserveServer(luo, 1, server, { drainTimeoutMs: 2000, onUndrained: 'carry', httpDrainMs: 5000, upgraded: 'raw' });
    // One turn later: the first answers to carried connections go out before the device's
    // worker thread starts.
    setImmediate(() => startDevice(luo));
    if (updated) {
      const generation = luo.liveupdateNumber;
      // Against the checksum as handed over (taken now, before any request), in small slices
      // once the first answers are out: it must never hold up a request.
      void verifying!.then((v) => {
        verified = { ...v, generation };
        say({ event: 'verified', version: tag, ...verified });
      });
    }
  }
  process.send?.('ready'); // pm2 wait_ready

  // ------------------------------------------------------------------ stop (plain, json)
  const stop = (signal: string): void => {
    const t = performance.now();
    server.close();
    server.closeIdleConnections();
    for (const s of live.keys()) s.destroy();
    if (args.mode === 'json') saveJson(store, args.stateFile!);
    say({ event: 'stopped', signal, saveMs: Math.round(performance.now() - t) });
    process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function listenRetrying(server: http.Server, port: number, host: string): Promise<void> {
  // A restart can find the port still held by the process it replaces for a moment.
  for (let i = 0; ; i++) {
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      return;
    } catch (e) {
      if ((e as { code?: string }).code !== 'EADDRINUSE' || i > 500) throw e;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/** The JSON-restart contender's state file: one JSON array of [key, value] pairs per line. */
function saveJson(store: KvStore, file: string): void {
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  let batch: Array<[string, string]> = [];
  const flush = (): void => {
    fs.writeSync(fd, JSON.stringify(batch) + '\n');
    batch = [];
  };
  for (const [k, v] of store.entries()) {
    batch.push([k.toString('latin1'), v.toString('latin1')]);
    if (batch.length === 10_000) flush();
  }
  if (batch.length) flush();
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}

function loadJson(store: KvStore, file: string): number {
  let n = 0;
  const text = fs.readFileSync(file, 'latin1');
  for (const line of text.split('\n')) {
    if (!line) continue;
    for (const [k, v] of JSON.parse(line) as Array<[string, string]>) {
      store.put(Buffer.from(k, 'latin1'), Buffer.from(v, 'latin1'));
      n++;
    }
  }
  return n;
}

/**
 * Run Node's HTTP path (parser, request, response) on a throwaway server over loopback, so
 * that V8 has compiled it before the real requests come: 50 requests that touch no state. A
 * successor does it before boot(), while the previous version still serves.
 */
async function warmHttp(): Promise<void> {
  const srv = http.createServer((req, res) => {
    req.on('data', () => {});
    req.on('end', () => res.writeHead(404, { 'x-version': 'warm', 'content-length': 10 }).end('not found\n'));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const sock = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  for (let i = 0; i < 50; i++) {
    await new Promise<void>((resolve) => {
      let buf = '';
      const on = (d: Buffer): void => {
        buf += d;
        if (buf.includes('not found')) {
          sock.off('data', on);
          resolve();
        }
      };
      sock.on('data', on);
      sock.write(`GET /kv/warm${i} HTTP/1.1\r\nhost: x\r\n\r\n`);
    });
  }
  sock.destroy();
  srv.close();
}
