/*
 * examples/kv/clients: the load the demo and the benchmark put on the service, each client
 * checking what it gets back. Every client keeps one connection for its whole life; if it
 * loses it, that counts as a dropped connection (it reconnects and goes on, as a real client
 * would).
 *
 *   HttpClient   sequential keep-alive requests: PUT a key it owns, then GET one of its keys
 *                and compare with what it last wrote (a lost write shows as a mismatch). An
 *                operation that gets no answer is retried until it does; it counts once as
 *                failed.
 *   WsClient     WebSocket messages {"seq":n}: each must be acknowledged exactly once, in
 *                order, by the same session, whose message count must equal n.
 *   EchoClient   a raw byte stream (a deterministic pattern) echoed back: every byte must
 *                come back exactly once and in order.
 *   IdleHttp     many keep-alive connections each sending one request every `everyMs`: the
 *                long-lived connections of the benchmark.
 * Each records the time of every answer (`times`), from which a pause is measured, and the
 * latency of each request (`lat`: [end ms, latency ms]), and when a connection dropped or a
 * request failed (`marks`).
 * stop() ends a client cleanly: the echo client first waits until everything it sent is back.
 */
import crypto from 'node:crypto';
import net from 'node:net';
import { FrameParser, OP, encodeFrame } from './ws.js';

export interface Counts {
  requests: number;
  failed: number;
  dropped: number;
  mismatches: number;
  lost: number;
  repeated: number;
  versions: Map<string, number>;
}

const now = (): number => performance.now();

export abstract class Client {
  readonly times: number[] = [];
  readonly lat: Array<[number, number]> = [];
  readonly counts: Counts = { requests: 0, failed: 0, dropped: 0, mismatches: 0, lost: 0, repeated: 0, versions: new Map() };
  /** When each connection was dropped and each request failed (for the bench's chart). */
  readonly marks: Array<[number, 'dropped' | 'failed']> = [];
  lastVersion = '';
  protected running = true;
  protected sock: net.Socket | null = null;
  constructor(readonly port: number, readonly host = '127.0.0.1') {}
  get connected(): boolean {
    return !!this.sock && !this.sock.destroyed;
  }
  protected mark(kind: 'dropped' | 'failed'): void {
    this.counts[kind]++;
    this.marks.push([now(), kind]);
  }
  protected seen(version: string | undefined): void {
    if (!version) return;
    this.lastVersion = version;
    this.counts.versions.set(version, (this.counts.versions.get(version) ?? 0) + 1);
  }
  abstract start(): Promise<void>;
  abstract stop(): Promise<void>;

  /** Connect and upgrade to `proto` on `path`; every byte after the 101 goes to `onData`. */
  protected async openUpgraded(path: string, proto: string, onData: (d: Buffer) => void, onClose: () => void): Promise<void> {
    const { sock, rest, version } = await upgrade(this.port, this.host, path, proto);
    this.sock = sock;
    this.seen(version);
    sock.on('data', onData);
    sock.on('close', () => {
      if (this.running) this.mark('dropped');
      onClose();
    });
    if (rest.length) onData(rest);
  }
}

/** A minimal HTTP/1.1 keep-alive client on one socket (so a dropped connection is visible). */
export class HttpClient extends Client {
  #buf = Buffer.alloc(0);
  #waiting: ((r: { status: number; headers: Map<string, string>; body: Buffer } | Error) => void) | null = null;
  #model = new Map<string, string>();
  #established = new WeakSet<net.Socket>();
  #n = 0;
  #loop: Promise<void> | null = null;
  constructor(port: number, readonly id: number, readonly opts: { pauseMs?: number; keys?: number } = {}) {
    super(port);
  }

  async #connect(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const s = net.connect(this.port, this.host, () => {
        s.off('error', reject);
        this.#established.add(s);
        resolve();
      });
      s.once('error', reject);
      s.setNoDelay(true);
      this.sock = s;
      this.#buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => this.#onData(d));
      s.on('close', () => {
        if (this.running && this.#established.has(s)) this.mark('dropped');
        this.#waiting?.(new Error('connection closed'));
        this.#waiting = null;
      });
      s.on('error', () => {});
    });
  }

  #onData(d: Buffer): void {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, d]) : Buffer.from(d);
    const end = this.#buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.#buf.subarray(0, end).toString('latin1').split('\r\n');
    const headers = new Map<string, string>();
    for (const l of head.slice(1)) {
      const i = l.indexOf(':');
      headers.set(l.slice(0, i).toLowerCase(), l.slice(i + 1).trim());
    }
    const len = Number(headers.get('content-length') ?? 0);
    if (this.#buf.length < end + 4 + len) return;
    const body = Buffer.from(this.#buf.subarray(end + 4, end + 4 + len));
    this.#buf = this.#buf.subarray(end + 4 + len);
    const w = this.#waiting;
    this.#waiting = null;
    w?.({ status: Number(head[0]!.split(' ')[1]), headers, body });
  }

  /** One request; a request unanswered for 10 s fails and its connection is closed. */
  request(method: string, path: string, body = ''): Promise<{ status: number; headers: Map<string, string>; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const sock = this.sock!;
      const t = setTimeout(() => {
        this.#waiting = null;
        reject(new Error('no answer in 10 s'));
        sock.destroy();
      }, 10_000);
      this.#waiting = (r) => {
        clearTimeout(t);
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
      this.sock!.write(`${method} ${path} HTTP/1.1\r\nhost: kv\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
  }

  async start(): Promise<void> {
    await this.#connect();
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    const keys = this.opts.keys ?? 50;
    while (this.running) {
      const n = this.#n++;
      const put = n % 2 === 0 || this.#model.size === 0;
      const key = put ? `c${this.id}:${(n >> 1) % keys}` : [...this.#model.keys()][(n >> 1) % this.#model.size]!;
      const value = `v${n}`;
      const t = now();
      // One operation, retried (every 5 ms) until it gets an answer: "failed" counts operations
      // that needed a retry, not the retries.
      let failedOnce = false;
      while (this.running) {
        try {
          if (!this.connected) await this.#connect();
          const r = await this.request(put ? 'PUT' : 'GET', `/kv/${encodeURIComponent(key)}`, put ? value : '');
          const e = now();
          this.counts.requests++;
          this.times.push(e);
          this.lat.push([e, e - t]);
          this.seen(r.headers.get('x-version'));
          if (put && r.status === 200) this.#model.set(key, value);
          else if (!put && r.status === 200 && r.body.toString() === this.#model.get(key)) { /* read back what was written */ }
          else if (!put && (r.status === 200 || r.status === 404)) this.counts.mismatches++; // a lost or wrong write
          else this.mark('failed');
          break;
        } catch {
          if (!failedOnce) this.mark('failed');
          failedOnce = true;
          await new Promise((r) => setTimeout(r, 5));
        }
      }
      if (this.opts.pauseMs) await new Promise((r) => setTimeout(r, this.opts.pauseMs));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.#loop;
    this.sock?.end();
  }
}

/** Shared by the WebSocket and echo clients: connect and upgrade. */
async function upgrade(port: number, host: string, path: string, proto: string): Promise<{ sock: net.Socket; rest: Buffer; version: string }> {
  const sock = net.connect(port, host);
  sock.setNoDelay(true);
  sock.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const key = crypto.randomBytes(16).toString('base64');
  sock.write(`GET ${path} HTTP/1.1\r\nhost: kv\r\nconnection: upgrade\r\nupgrade: ${proto}\r\nsec-websocket-key: ${key}\r\nsec-websocket-version: 13\r\n\r\n`);
  let buf = Buffer.alloc(0);
  for (;;) {
    const d = await new Promise<Buffer>((resolve, reject) => {
      sock.once('data', resolve);
      sock.once('close', () => reject(new Error('closed during the upgrade')));
    });
    buf = Buffer.concat([buf, d]);
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) continue;
    const head = buf.subarray(0, end).toString('latin1');
    if (!head.startsWith('HTTP/1.1 101')) throw new Error(`upgrade refused: ${head.split('\r\n')[0]}`);
    const version = /x-version: (\S+)/i.exec(head)?.[1] ?? '';
    return { sock, rest: buf.subarray(end + 4), version };
  }
}

export class WsClient extends Client {
  #seq = 0;
  #acked = 0;
  #session = -1;
  #parser = new FrameParser(false);
  #pending: (() => void) | null = null;
  #loop: Promise<void> | null = null;
  constructor(port: number, readonly opts: { pauseMs?: number } = {}) {
    super(port);
  }

  async start(): Promise<void> {
    await this.openUpgraded('/ws', 'websocket', (d) => this.#onData(d), () => this.#pending?.());
    this.#loop = this.#run();
  }

  #onData(d: Buffer): void {
    for (const f of this.#parser.push(d)) {
      if (f.opcode !== OP.TEXT) continue;
      const m = JSON.parse(f.payload.toString()) as { ack: number; count: number; session: number; v: string };
      this.times.push(now());
      this.seen(m.v);
      if (m.ack === this.#acked) this.counts.repeated++;
      else if (m.ack !== this.#acked + 1) this.counts.lost += Math.max(1, m.ack - this.#acked - 1);
      if (this.#session < 0) this.#session = m.session;
      if (m.session !== this.#session || m.count !== m.ack) this.counts.mismatches++;
      this.#acked = Math.max(this.#acked, m.ack);
      if (this.#acked === this.#seq) this.#pending?.();
    }
  }

  async #run(): Promise<void> {
    while (this.running && this.connected) {
      const seq = ++this.#seq;
      const t = now();
      const done = new Promise<void>((r) => (this.#pending = r));
      // Split each message in two frames written apart, so updates also land mid-message.
      const payload = Buffer.from(JSON.stringify({ seq, pad: 'p'.repeat(seq % 50) }));
      const cut = payload.length >> 1;
      const mask = crypto.randomBytes(4);
      this.sock!.write(encodeFrame(OP.TEXT, payload.subarray(0, cut), mask, false));
      await new Promise((r) => setTimeout(r, 1));
      if (!this.connected) break;
      this.sock!.write(encodeFrame(OP.CONT, payload.subarray(cut), crypto.randomBytes(4)));
      await done;
      this.counts.requests++;
      this.lat.push([now(), now() - t]);
      if (this.#acked < seq) {
        this.mark('failed');
        break;
      }
      if (this.opts.pauseMs) await new Promise((r) => setTimeout(r, this.opts.pauseMs));
    }
  }

  get acked(): number {
    return this.#acked;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.#loop;
    this.sock?.end();
  }
}

/** The byte pattern of the echo stream: byte i of the stream. */
const patternByte = (i: number): number => (Math.imul(i, 2654435761) >>> 24) ^ (i & 0xff);

export class EchoClient extends Client {
  sent = 0;
  received = 0;
  #writing: Promise<void> | null = null;
  #allBack: (() => void) | null = null;

  async start(): Promise<void> {
    await this.openUpgraded('/echo', 'tcp-echo', (d) => this.#onData(d), () => this.#allBack?.());
    this.#writing = this.#write();
  }

  #onData(d: Buffer): void {
    this.times.push(now());
    for (let i = 0; i < d.length; i++) {
      if (d[i] !== patternByte(this.received + i)) {
        this.counts.mismatches++;
        break;
      }
    }
    this.received += d.length;
    if (this.received > this.sent) this.counts.repeated += this.received - this.sent;
    if (!this.running && this.received >= this.sent) this.#allBack?.();
  }

  async #write(): Promise<void> {
    const chunk = 4096;
    while (this.running && this.connected) {
      const b = Buffer.allocUnsafe(chunk);
      for (let i = 0; i < chunk; i++) b[i] = patternByte(this.sent + i);
      this.sent += chunk;
      if (!this.sock!.write(b)) await new Promise((r) => this.sock!.once('drain', r));
      // Keep no more than 256 KiB in flight: a stream, not a flood.
      while (this.running && this.sent - this.received > 256 * 1024 && this.connected) await new Promise((r) => setTimeout(r, 1));
    }
  }

  async stop(timeoutMs = 10_000): Promise<void> {
    this.running = false;
    await this.#writing;
    if (this.received < this.sent && this.connected) {
      await Promise.race([new Promise<void>((r) => (this.#allBack = r)), new Promise((r) => setTimeout(r, timeoutMs))]);
    }
    this.counts.lost += Math.max(0, this.sent - this.received);
    this.counts.requests = this.received;
    this.sock?.end();
  }
}

/** `n` keep-alive connections, each sending GET /kv/key:0 every `everyMs` (staggered). */
export class IdleHttp extends Client {
  #socks: net.Socket[] = [];
  #timers: NodeJS.Timeout[] = [];
  open = 0;
  constructor(port: number, readonly n: number, readonly everyMs = 1000) {
    super(port);
  }

  async start(): Promise<void> {
    for (let i = 0; i < this.n; i++) {
      const s = net.connect(this.port, this.host);
      s.on('error', () => {});
      await new Promise<void>((resolve, reject) => {
        s.once('connect', resolve);
        s.once('error', reject);
      });
      this.open++;
      s.on('close', () => {
        this.open--;
        if (this.running) this.mark('dropped');
      });
      let sentAt = 0;
      let buf = '';
      s.setEncoding('latin1');
      s.on('data', (d: string) => {
        buf += d;
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const len = Number(/content-length: (\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        this.seen(/x-version: (\S+)/i.exec(buf.slice(0, end))?.[1]);
        if (!buf.startsWith('HTTP/1.1 200')) this.mark('failed');
        buf = buf.slice(end + 4 + len);
        this.counts.requests++;
        const e = now();
        this.times.push(e);
        this.lat.push([e, e - sentAt]);
      });
      const t = setTimeout(() => {
        const tick = (): void => {
          if (!this.running || s.destroyed) return;
          sentAt = now();
          s.write('GET /kv/key:0 HTTP/1.1\r\nhost: kv\r\n\r\n');
        };
        tick();
        this.#timers.push(setInterval(tick, this.everyMs));
      }, Math.floor((i / this.n) * this.everyMs));
      this.#timers.push(t);
      this.#socks.push(s);
      if (i % 200 === 199) await new Promise((r) => setImmediate(r));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const t of this.#timers) clearInterval(t);
    for (const s of this.#socks) s.destroy();
  }
}

/**
 * The longest time a client went without an answer across [from, to]: for each client, the
 * largest gap between consecutive answers that overlaps the window; the max over clients.
 */
export function maxGap(clients: Client[], from: number, to: number): number {
  return maxGapSpan(clients, from, to).gap;
}

/** maxGap, and where it was: the answer before it and the one that ended it (performance.now()). */
export function maxGapSpan(clients: Client[], from: number, to: number): { gap: number; start: number; end: number } {
  let max = 0;
  let start = 0;
  for (const c of clients) {
    const t = c.times;
    for (let i = 1; i < t.length; i++) {
      if (t[i]! < from || t[i - 1]! > to) continue;
      if (t[i]! - t[i - 1]! > max) {
        max = t[i]! - t[i - 1]!;
        start = t[i - 1]!;
      }
    }
  }
  return { gap: max, start, end: start + max };
}

/** p-th percentile of request latencies ending within [from, to]. */
export function latencyPercentile(clients: Client[], from: number, to: number, p: number): number {
  const xs: number[] = [];
  for (const c of clients) for (const [e, l] of c.lat) if (e >= from && e <= to) xs.push(l);
  if (!xs.length) return 0;
  xs.sort((a, b) => a - b);
  return xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
}
