/*
 * A keep-alive HTTP/1.1 client written by hand, for tests that must choose the connection
 * each request goes on (http.Agent picks its own): requests in order, one body per answer
 * (Content-Length framing, as the echo service answers).
 */
import net from 'node:net';

export class KeepAlive {
  readonly sock: net.Socket;
  readonly bodies: string[] = [];
  #buf = Buffer.alloc(0);
  #waiters: Array<() => void> = [];
  constructor(port: number) {
    this.sock = net.connect(port, '127.0.0.1');
    this.sock.on('data', (d) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      for (;;) {
        const end = this.#buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = this.#buf.subarray(0, end).toString('latin1');
        const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? NaN);
        if (!Number.isFinite(len)) throw new Error(`no content-length in ${head}`);
        if (this.#buf.length < end + 4 + len) return;
        this.bodies.push(this.#buf.subarray(end + 4, end + 4 + len).toString());
        this.#buf = this.#buf.subarray(end + 4 + len);
        this.#waiters.shift()?.();
      }
    });
  }
  connected(): Promise<void> {
    return new Promise((r) => this.sock.once('connect', () => r()));
  }
  /** Send a request for `url`; resolves with its answer's body. */
  get(url: string): Promise<string> {
    const at = this.bodies.length + this.#waiters.length;
    const done = new Promise<string>((r) => this.#waiters.push(() => r(this.bodies[at]!)));
    this.sock.write(`GET ${url} HTTP/1.1\r\nHost: x\r\n\r\n`);
    return done;
  }
}

/** `n` of them, connected in batches of 250 (a listen backlog's worth). */
export async function connectKeepAlive(port: number, n: number): Promise<KeepAlive[]> {
  const out: KeepAlive[] = [];
  for (let i = 0; i < n; i += 250) {
    const batch = Array.from({ length: Math.min(250, n - i) }, () => new KeepAlive(port));
    await Promise.all(batch.map((c) => c.connected()));
    out.push(...batch);
  }
  return out;
}
