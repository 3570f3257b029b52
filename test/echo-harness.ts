/*
 * Harness for the echo service (test/images/echo-lib.ts): start it, update it with SIGUSR2,
 * read its JSON lines; and streaming clients that check every echoed byte against a
 * deterministic pattern (byte i of connection c is (i * 31 + c * 7) & 255), so a lost,
 * repeated or reordered byte is caught at the byte where it happens.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { after } from 'node:test';
import { descendants, imagePath, onJsonLines } from './helpers.js';

// Every service started here is killed when the test file ends, even after a timed-out test
// (whose finally never runs): a live child would keep the file from ever exiting.
const services = new Set<Service>();
after(() => services.forEach((s) => s.stop()));

export type Line = Record<string, unknown> & { event: string };

export class Service {
  readonly child: ChildProcess;
  readonly lines: Line[] = [];
  #waiters: Array<{ pred: (l: Line) => boolean; resolve: (l: Line) => void }> = [];
  stderr = '';

  constructor(env: NodeJS.ProcessEnv = {}, image = 'echo-a', args: string[] = []) {
    this.child = spawn(process.execPath, [imagePath(image), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    services.add(this);
    onJsonLines<Line>(this.child.stdout!, (l) => {
      this.lines.push(l);
      this.#waiters = this.#waiters.filter((w) => (w.pred(l) ? (w.resolve(l), false) : true));
    });
    this.child.stderr!.on('data', (d) => (this.stderr += d));
  }

  next(pred: (l: Line) => boolean, timeoutMs = 30_000): Promise<Line> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for a line; got ${JSON.stringify(this.lines)}; stderr: ${this.stderr}`)), timeoutMs);
      this.#waiters.push({ pred, resolve: (l) => (clearTimeout(t), resolve(l)) });
    });
  }

  async start(): Promise<number> {
    const l = await this.next((x) => x.event === 'listening');
    await this.next((x) => x.event === 'ready');
    return l.port as number;
  }

  /** The pid serving now: the first image's, or (successor mode) the last one announced. */
  get pid(): number {
    const ready = this.lines.filter((l) => l.event === 'ready' && typeof l.pid === 'number');
    return (ready.at(-1)?.pid as number | undefined) ?? this.child.pid!;
  }

  /** Trigger one live update; resolves with the next image's 'ready' (or 'update-failed') line. */
  async update(): Promise<Line> {
    const before = this.lines.length;
    process.kill(this.pid, 'SIGUSR2');
    return this.next((l) => this.lines.indexOf(l) >= before && (l.event === 'ready' || l.event === 'update-failed'));
  }

  /** Kill every image (and any successor still starting), and let go of their output. */
  stop(): void {
    const pids = new Set([this.child.pid!, ...this.lines.filter((l) => typeof l.pid === 'number').map((l) => l.pid as number)]);
    for (const p of [...pids]) for (const d of descendants(p)) pids.add(d);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch { /* gone */ }
    }
    this.child.stdout?.destroy();
    this.child.stderr?.destroy();
  }
}

export const patternByte = (c: number, i: number): number => (i * 31 + c * 7) & 255;

export function pattern(c: number, from: number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let k = 0; k < n; k++) b[k] = patternByte(c, from + k);
  return b;
}

/** A connection that streams the pattern and checks what comes back. */
export class StreamClient {
  readonly id: number;
  readonly sock: net.Socket;
  sent = 0;
  received = 0;
  error: string | null = null;
  closed = false;
  lastRx = 0;
  maxGapMs = 0;
  #connected: Promise<void>;

  constructor(id: number, port: number) {
    this.id = id;
    this.sock = net.connect(port, '127.0.0.1');
    this.#connected = new Promise((resolve, reject) => {
      this.sock.once('connect', () => resolve());
      this.sock.once('error', reject);
    });
    this.sock.on('data', (d: Buffer) => {
      const now = performance.now();
      if (this.lastRx) this.maxGapMs = Math.max(this.maxGapMs, now - this.lastRx);
      this.lastRx = now;
      if (this.error) return;
      for (let k = 0; k < d.length; k++) {
        if (d[k] !== patternByte(this.id, this.received + k)) {
          this.error = `connection ${this.id}: byte ${this.received + k} is ${d[k]}, expected ${patternByte(this.id, this.received + k)}`;
          break;
        }
      }
      this.received += d.length;
      if (this.received > this.sent && !this.error) this.error = `connection ${this.id}: received ${this.received} bytes, only ${this.sent} sent`;
    });
    this.sock.on('error', (e) => (this.error ??= `connection ${this.id}: ${e.message}`));
    this.sock.on('close', () => (this.closed = true));
  }

  connected(): Promise<void> {
    return this.#connected;
  }

  /** Send the next n pattern bytes (only when the socket can take them: no pause, no flood). */
  pump(n: number): void {
    if (this.closed || this.sock.writableLength > 64 * 1024) return;
    this.sock.write(pattern(this.id, this.sent, n));
    this.sent += n;
  }

  /** Resolves once every byte sent came back (or rejects after timeoutMs). */
  async settled(timeoutMs = 20_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.received < this.sent && !this.error && !this.closed) {
      if (Date.now() > end) throw new Error(`connection ${this.id}: ${this.received}/${this.sent} bytes echoed after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/**
 * `n` streaming clients (ids firstId, firstId + 1, …), connected in batches of 250 (a
 * listen backlog's worth); with `echo`, each has then sent that many bytes and had them all
 * back (the service has accepted and served every one).
 */
export async function connectClients(port: number, n: number, opts: { firstId?: number; echo?: number } = {}): Promise<StreamClient[]> {
  const clients: StreamClient[] = [];
  for (let i = 0; i < n; i += 250) {
    const batch = Array.from({ length: Math.min(250, n - i) }, (_, k) => new StreamClient((opts.firstId ?? 0) + i + k, port));
    await Promise.all(batch.map((c) => c.connected()));
    clients.push(...batch);
  }
  if (opts.echo) {
    for (const c of clients) c.pump(opts.echo);
    await Promise.all(clients.map((c) => c.settled()));
  }
  return clients;
}

/**
 * After an update: each client sends `n` more bytes, and every byte any of them ever sent
 * came back exactly once, in order, on a connection that stayed open.
 */
export async function assertEveryByteOnce(clients: StreamClient[], n = 32): Promise<void> {
  for (const c of clients) c.pump(n);
  await Promise.all(clients.map((c) => c.settled()));
  for (const c of clients) {
    assert.equal(c.error, null);
    assert.equal(c.closed, false, `connection ${c.id} was closed`);
    assert.equal(c.received, c.sent, `connection ${c.id}`);
  }
}

/** Sockets a process holds, stdio aside (a child's stdio pipes are socketpairs). */
export const socketCount = (pid: number): number => fs.readdirSync(`/proc/${pid}/fd`).filter((f) => {
  if (Number(f) <= 2) return false;
  try {
    return fs.readlinkSync(`/proc/${pid}/fd/${f}`).startsWith('socket:');
  } catch {
    return false;
  }
}).length;
