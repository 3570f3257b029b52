/*
 * kho/successor: the handover to a pre-started successor process, luo's alternative to the
 * in-place exec. The next image is started while the current one still serves, loads its
 * code and blocks in boot; only then does the current image freeze and pass it the arena and
 * every carried fd over a socketpair (SCM_RIGHTS), and exit once the successor has them.
 * The pause is the freeze plus the transfer, not a Node start; the price is a new pid.
 *
 * Protocol (SOCK_SEQPACKET, one JSON object per datagram; fd 3 in the successor, whose
 * environment has LUO_HANDOVER=successor:3):
 *   successor → current   {"luo":"successor-v1","pid":P}                 ready to receive
 *   current → successor   {"luo":"handover-v1","entry":E,"fds":[…],"chunks":N}
 *                         then N datagrams {"chunk":i} carrying fds[253i…] in order
 *   successor → current   {"taken":count}                                 it owns them now
 * E is the in-place handover string (kho-v1:<arena fd>:<root>:<size>) with the current
 * image's fd numbers; `fds` lists those numbers, the arena's included. The successor receives
 * each fd under a new number and translates through the map (Kho.incomingFd).
 *
 * Lifecycle, current image: start() → ready() (the loop keeps serving; rejects if the
 * successor exits or times out, and kills it) → handover() (synchronous: send, then block
 * until "taken"; throws if the successor dies or does not answer in time, and kills it, so
 * the caller can cancel and keep serving: nothing was given up) → the caller exits.
 * abort() kills the successor and closes the link at any point; the successor then exits
 * with "the previous image cancelled the handover".
 * Successor: receiveHandover() blocks until everything has arrived or the link closes (fatal:
 * a successor without its handover must not serve).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { HandoverError, LuoError, fail } from '../errors.js';
import * as sys from '../sys/index.js';
import { HANDOVER_ENV } from './kho.js';
import { resolveExecutable, type Image } from './reboot.js';

/** The fd the successor finds its end of the link on. */
export const SUCCESSOR_FD = 3;
export const SUCCESSOR_PREFIX = 'successor:';

export class Successor {
  readonly child: ChildProcess;
  #fd: number;
  #exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;

  private constructor(child: ChildProcess, fd: number) {
    this.child = child;
    this.#fd = fd;
    child.once('exit', (code, signal) => (this.#exit = { code, signal }));
  }

  /** Start the next image as a successor (stdio inherited, the link as fd 3). */
  static start(image: Image): Successor {
    if (!image.file || !Array.isArray(image.argv) || image.argv.length === 0) throw fail('EINVAL', 'next image needs a file and argv[0]');
    // Fail now, as an exec would, on a program that cannot be run (spawn would only say so
    // asynchronously, and the update would wait for a successor that never comes).
    const file = resolveExecutable(image.file, (image.env ?? process.env).PATH);
    const [mine, theirs] = sys.seqpacketPair();
    let child: ChildProcess;
    try {
      const env: NodeJS.ProcessEnv = { ...(image.env ?? process.env), [HANDOVER_ENV]: `${SUCCESSOR_PREFIX}${SUCCESSOR_FD}` };
      child = spawn(file, image.argv.slice(1), {
        argv0: image.argv[0], cwd: image.cwd, env, stdio: ['inherit', 'inherit', 'inherit', theirs],
      });
    } catch (e) {
      sys.close(mine);
      throw fail('EINVAL', `cannot start the successor ${image.file}: ${(e as Error).message}`);
    } finally {
      sys.close(theirs);
    }
    child.on('error', () => {}); // reported through exit / ready()
    child.unref();
    return new Successor(child, mine);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  #exitText(): string {
    const e = this.#exit!;
    return e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
  }

  /** Resolves when the successor has loaded and waits for the handover. Never blocks the loop. */
  async ready(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.#fd < 0) throw fail('ECANCELED', 'the successor was aborted');
      const [rev] = sys.poll([this.#fd], 0);
      if (rev) {
        const p = sys.recvPacket(this.#fd);
        if (p && !p.eof) {
          for (const fd of p.fds) sys.close(fd);
          let m: { luo?: string };
          try {
            m = JSON.parse(p.data.toString()) as typeof m;
          } catch {
            m = {};
          }
          if (m.luo === 'successor-v1') return;
          this.abort();
          throw fail('EPROTO', `the successor said ${JSON.stringify(p.data.toString().slice(0, 80))}, not hello`);
        }
        // EOF: it closed the link (usually by exiting); wait for its exit status below.
        const until = Date.now() + 1000;
        while (!this.#exit && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
        this.abort();
        throw fail('ECHILD', `the successor ${this.#exit ? this.#exitText() : 'closed the handover link'} before it was ready`);
      }
      if (this.#exit) {
        this.abort();
        throw fail('ECHILD', `the successor ${this.#exitText()} before it was ready`);
      }
      if (Date.now() > deadline) {
        this.abort();
        throw fail('ETIMEDOUT', `the successor was not ready within ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /**
   * Give the successor the handover string and its fds; block until it has taken them.
   * Throws (having killed the successor) when it dies or does not answer within timeoutMs.
   */
  handover(entry: string, fds: number[], timeoutMs: number): void {
    if (this.#fd < 0) throw fail('ECANCELED', 'the successor was aborted');
    const chunks: number[][] = [];
    for (let i = 0; i < fds.length; i += sys.MAX_FDS) chunks.push(fds.slice(i, i + sys.MAX_FDS));
    try {
      sys.sendPacket(this.#fd, Buffer.from(JSON.stringify({ luo: 'handover-v1', entry, fds, chunks: chunks.length })));
      chunks.forEach((c, i) => sys.sendPacket(this.#fd, Buffer.from(JSON.stringify({ chunk: i })), c));
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const left = deadline - Date.now();
        if (left <= 0) throw fail('ETIMEDOUT', `the successor did not take the handover within ${timeoutMs} ms`);
        const [rev] = sys.poll([this.#fd], left);
        if (!rev) continue;
        const p = sys.recvPacket(this.#fd);
        if (!p || p.eof) throw fail('ECHILD', 'the successor closed the handover link before taking it');
        const m = JSON.parse(p.data.toString()) as { taken?: number };
        if (m.taken !== fds.length) throw fail('EPROTO', `the successor took ${m.taken} fds, ${fds.length} were sent`);
        break;
      }
    } catch (e) {
      this.abort();
      if (e instanceof LuoError) throw e;
      throw fail('EIO', `handover to the successor failed: ${(e as Error).message}`);
    }
    sys.close(this.#fd);
    this.#fd = -1;
  }

  /** Kill the successor (if it still runs) and close the link. Idempotent. */
  abort(): void {
    if (this.#fd >= 0) {
      sys.close(this.#fd);
      this.#fd = -1;
    }
    if (!this.#exit) {
      try {
        this.child.kill('SIGKILL');
      } catch { /* gone */ }
    }
  }
}

/**
 * Successor side: say hello on `fd`, wait for the handover, take every fd. Returns the
 * handover string rewritten with this process's arena fd, and the old → new fd map.
 */
export function receiveHandover(fd: number): { entry: string; fdMap: Map<number, number> } {
  // The link is a blocking socket: recvmsg waits by itself.
  const recv = (): sys.Packet => {
    for (;;) {
      const p = sys.recvPacket(fd);
      if (!p) continue;
      if (p.eof) throw new HandoverError('the previous image cancelled the handover (the link closed before it was complete)');
      return p;
    }
  };
  try {
    sys.sendPacket(fd, Buffer.from(JSON.stringify({ luo: 'successor-v1', pid: process.pid })));
  } catch (e) {
    throw new HandoverError(`the handover link (fd ${fd}) is unusable: ${(e as Error).message}`);
  }
  const head = recv();
  let h: { luo?: string; entry?: string; fds?: number[]; chunks?: number };
  try {
    h = JSON.parse(head.data.toString()) as typeof h;
  } catch {
    throw new HandoverError('the handover header is not JSON');
  }
  if (h.luo !== 'handover-v1' || typeof h.entry !== 'string' || !Array.isArray(h.fds) || !Number.isInteger(h.chunks)) {
    throw new HandoverError(`the handover header is malformed: ${head.data.toString().slice(0, 120)}`);
  }
  const got: number[] = [];
  for (let i = 0; i < h.chunks!; i++) {
    const p = recv();
    if (p.fdsTruncated) throw new HandoverError('fds were lost in the handover (SCM_RIGHTS truncated: is the fd limit too low?)');
    got.push(...p.fds);
  }
  if (got.length !== h.fds.length) throw new HandoverError(`the handover named ${h.fds.length} fds and ${got.length} arrived`);
  const fdMap = new Map<number, number>();
  h.fds.forEach((old, i) => fdMap.set(old, got[i]!));
  const m = /^([^:]*):(\d+):(.*)$/.exec(h.entry);
  if (!m) throw new HandoverError(`the handover string ${JSON.stringify(h.entry)} is malformed`);
  const arena = fdMap.get(Number(m[2]));
  if (arena === undefined) throw new HandoverError(`the arena fd ${m[2]} was not among the fds handed over`);
  sys.sendPacket(fd, Buffer.from(JSON.stringify({ taken: got.length })));
  sys.close(fd);
  return { entry: `${m[1]}:${arena}:${m[3]}`, fdMap };
}
