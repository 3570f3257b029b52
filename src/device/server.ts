/*
 * device/server: the service's /dev/liveupdate: a SOCK_SEQPACKET socket at <rundir>/liveupdate
 * (mode 0600, in a 0700 directory), speaking the protocol in src/uapi.
 *
 * Lifecycle: start() removes a stale socket (a previous image's), binds, listens and starts
 * the I/O worker (worker.ts), or hands the socket to one started early by prewarm(); requests
 * arrive as messages and run on the main thread (dispatch.ts), one at a time, in the order the
 * worker saw them (an agent's session opens after the previous one's close has run); every
 * request gets a reply through a MessagePort (EIO if its handling failed), and a failure on one
 * message never stops the ones after it. A worker that exits unasked is said (a warning). When
 * the agent hangs up, the tokens it preserved are dropped (cancelled if prepared) and the
 * global state stays as it is (v3 §2.4). REBOOT sends its success reply right before execve; the exec then closes the
 * socket, and the next image's boot starts a new device on the same path. stop() ends the
 * worker, closes the socket and removes the path. Nothing a client sends can crash the service:
 * every failure becomes a negative errno in the reply, or closes that one connection.
 */
import fs from 'node:fs';
import path from 'node:path';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { INTERNAL_WORKER } from '../util/workers.js';
import { fail } from '../errors.js';
import type { Luo } from '../luo/luo.js';
import * as sys from '../sys/index.js';
import { DEVICE_WORDS_BYTES, W, deviceWords } from '../uapi/device-words.js';
import { guardOf } from '../uapi/handover.js';
import { dispatch, encodeReply, type Reply, type Session } from './dispatch.js';

export interface DeviceOptions {
  /** Extra uids and gids allowed to drive updates (root and the service's uid always are). */
  allowUids?: number[];
  allowGids?: number[];
}

interface Spare { worker: Worker; port: MessagePort; flag: Int32Array }
let spare: Spare | null = null;

/** The guard's words for the first device of a guarded image (its watchdog reads them). */
let guardWordsTaken = false;

function spawnWorker(init: { listenFd: number; allowUids: number[]; allowGids: number[] }): Spare {
  const g = guardOf();
  const fromGuard = g?.deviceWords && !guardWordsTaken ? g.deviceWords : null;
  if (fromGuard) guardWordsTaken = true;
  const sab = fromGuard ?? new SharedArrayBuffer(DEVICE_WORDS_BYTES);
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(new URL('./worker.js', import.meta.url), {
    ...INTERNAL_WORKER,
    workerData: { ...init, sab, port: port2, uid: process.getuid?.() ?? 0 },
    transferList: [port2],
  });
  worker.unref();
  return { worker, port: port1, flag: deviceWords(sab).flag };
}

export class Device {
  readonly path: string;
  readonly #luo: Luo;
  #listenFd: number;
  readonly #worker: Worker;
  readonly #flag: Int32Array;
  readonly #port: MessagePort;
  #session: Session | null = null;
  #chain: Promise<unknown> = Promise.resolve();
  #stopping = false;
  /** Peers refused since start (for logs and tests). */
  readonly denied: Array<{ pid: number; uid: number; gid: number } | null> = [];

  private constructor(luo: Luo, file: string, listenFd: number, opts: DeviceOptions) {
    this.#luo = luo;
    this.path = file;
    this.#listenFd = listenFd;
    const init = { listenFd, allowUids: opts.allowUids ?? [], allowGids: opts.allowGids ?? [] };
    let w: Spare;
    if (spare) {
      // A worker started while this process waited for its handover: give it the socket.
      w = spare;
      spare = null;
      w.port.postMessage(init);
      Atomics.store(w.flag, W.GIVEN, 1);
      Atomics.notify(w.flag, W.GIVEN);
    } else w = spawnWorker(init);
    this.#flag = w.flag;
    this.#port = w.port;
    this.#worker = w.worker;
    // In the order the I/O thread saw them: an agent's session opens after the previous one's
    // close has run (a close still queued behind a request must not end the next session).
    this.#worker.on('message', (m: { type: string; data?: Uint8Array; fds?: number[]; agent?: number; cred?: { pid: number; uid: number; gid: number } | null }) => {
      if (m.type === 'open') this.#then(() => void (this.#session = { tokens: new Set(), image: null, sendNow: () => {} }));
      if (m.type === 'denied') this.denied.push(m.cred ?? null);
      if (m.type === 'close') this.#then(() => this.#closeSession());
      if (m.type === 'req') this.#then(() => this.#request(m.agent!, m.data, m.fds ?? []));
    });
    this.#worker.on('error', (e) => process.emitWarning(`luo: control device worker failed: ${e.message}`));
    this.#worker.on('exit', (code) => {
      if (!this.#stopping) process.emitWarning(`luo: the control device's thread exited (code ${code}); no agent can drive this service until it restarts`);
    });
    // A successor that took over and then failed: this image serves again, and so does its
    // device (the successor's may have taken the path meanwhile).
    luo.on('resumed', () => this.#relisten());
  }

  /** Listen again at the path, on a new socket the worker takes over. */
  #relisten(): void {
    try {
      fs.rmSync(this.path, { force: true });
      const fd = sys.seqpacketListen(this.path, 16, true);
      fs.chmodSync(this.path, 0o600);
      this.#listenFd = fd;
      this.#port.postMessage({ listenFd: fd });
      Atomics.store(this.#flag, W.RELISTEN, 1);
    } catch (e) {
      process.emitWarning(`luo: the control device could not listen again at ${this.path}: ${(e as Error).message}`);
    }
  }

  /**
   * Start the I/O worker now, before there is a socket to serve: a successor does this before
   * it blocks for its handover, so the worker's start-up (a thread, its modules) is not in the
   * pause. start() then hands it the socket. Idempotent; an unused spare costs one idle thread.
   */
  static prewarm(): void {
    spare ??= spawnWorker({ listenFd: -1, allowUids: [], allowGids: [] });
  }

  /**
   * Block (without the event loop, which a booting successor does not run yet) until the
   * worker prewarm() started has loaded, for at most `timeoutMs`. A successor calls this
   * before it says it is ready: a thread still starting would compete with the pause for CPU.
   * Returns whether it has started; no spare worker counts as started.
   */
  static awaitPrewarm(timeoutMs = 2000): boolean {
    if (!spare) return true;
    const f = spare.flag;
    const deadline = Date.now() + timeoutMs;
    while (Atomics.load(f, W.STARTED) === 0) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      Atomics.wait(f, W.STARTED, 0, left);
    }
    return true;
  }

  static start(luo: Luo, opts: DeviceOptions = {}): Device {
    if (!luo.config.enabled) throw fail('EOPNOTSUPP', 'live update is disabled (LUO_ENABLE=0): no control device');
    const dir = luo.config.rundir;
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, 0o700);
    const file = path.join(dir, 'liveupdate');
    fs.rmSync(file, { force: true }); // a previous image's socket
    const fd = sys.seqpacketListen(file, 16, true);
    fs.chmodSync(file, 0o600);
    const d = new Device(luo, file, fd, opts);
    // A next image under luo's guard is up now: an agent can drive it to FINISH.
    guardOf()?.up();
    return d;
  }

  #sendDirect(m: { agent?: number }, r: Reply): void {
    sys.sendPacket(m.agent!, encodeReply(r));
  }

  /** Run `fn` after everything the I/O thread sent before; a failure is said, and the
   *  messages after it still run (a rejected chain would leave every later request, and the
   *  agent waiting for it, unanswered). */
  #then(fn: () => unknown): void {
    this.#chain = this.#chain.then(fn).catch((e: unknown) => process.emitWarning(`luo: the control device failed on a message: ${(e as Error)?.message ?? e}`));
  }

  /** One request: its reply is posted to the I/O thread whatever happens (EIO at worst). */
  async #request(agent: number, data: Uint8Array | undefined, fds: number[]): Promise<void> {
    let reply: Reply;
    try {
      const session = this.#session ?? { tokens: new Set<bigint>(), image: null, sendNow: () => {} };
      session.sendNow = (r) => this.#sendDirect({ agent }, r);
      // After a successor handover this image waits (a few seconds at most) for the successor's
      // FINISH: stop listening first, so an agent reconnecting is refused (and retries) instead
      // of waiting in a backlog nobody accepts from, until the successor's device takes the
      // path; then end this agent's connection. shutdown, not close: the fds stay the worker's.
      session.hangUp = () => {
        for (const [fd, stop] of [[this.#listenFd, sys.stopListening], [agent, sys.shutdownWrite]] as const) {
          try {
            stop(fd);
          } catch { /* gone */ }
        }
      };
      reply = await dispatch(this.#luo, session, Buffer.from(data ?? new Uint8Array(0)), fds);
    } catch (e) {
      reply = { result: -5, struct: Buffer.alloc(0) };
      process.emitWarning(`luo: control request failed unexpectedly: ${(e as Error).message}`);
    }
    this.#port.postMessage({ data: encodeReply(reply), fd: reply.fd });
    Atomics.store(this.#flag, W.REPLY, 1);
    Atomics.notify(this.#flag, W.REPLY);
    if (reply.release) {
      // Wait (briefly, off the event loop's critical path) until the worker has sent the fd.
      const t0 = Date.now();
      while (Atomics.load(this.#flag, W.REPLY) !== 2 && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 1));
      reply.release();
    }
  }

  async #closeSession(): Promise<void> {
    const s = this.#session;
    this.#session = null;
    if (s && s.tokens.size) await this.#luo.files.drop(s.tokens);
  }

  /** Stop serving: end the worker, close the socket, remove the path. */
  async stop(): Promise<void> {
    this.#stopping = true;
    Atomics.store(this.#flag, W.STOP, 1);
    await new Promise((r) => setTimeout(r, 300));
    await this.#worker.terminate();
    try {
      sys.close(this.#listenFd);
    } catch { /* closed */ }
    fs.rmSync(this.path, { force: true });
  }
}
