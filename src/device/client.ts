/*
 * device/client: the agent's side of the control protocol (used by the `luo` command). It
 * speaks the same bytes as any other client (docs/uapi.md); nothing here is needed to drive
 * luo from another language.
 *
 * Lifecycle: connect(path) → request()… → close(). Each request is one datagram and waits for
 * its one reply (blocking: the agent is a command-line program; for at most `timeoutMs` when
 * given, then ETIMEDOUT and the connection is the caller's to close). A reply of EBUSY or EPERM
 * right after connecting means another agent holds the device or this user may not drive it.
 */
import { LuoError, NoAnswerError, errnoName } from '../errors.js';
import * as sys from '../sys/index.js';
import { IOCTL } from '../uapi/protocol.js';

export class DeviceClient {
  readonly fd: number;

  private constructor(fd: number) {
    this.fd = fd;
  }

  static connect(path: string): DeviceClient {
    try {
      return new DeviceClient(sys.seqpacketConnect(path));
    } catch (e) {
      const code = (e as LuoError).code;
      const why = code === 'ENOENT' || code === 'ECONNREFUSED' ? 'no service is listening there (is it running with its device enabled?)' : code === 'EACCES' ? 'permission denied on the socket' : (e as Error).message;
      throw new LuoError(code ?? 'EIO', `cannot connect to ${path}: ${why}`, { cause: e });
    }
  }

  /** Send one request; resolve to its reply. Raises LuoError for a negative result. */
  request(cmd: number, struct: Buffer, fds: number[] = [], opts: { allowFail?: boolean; timeoutMs?: number } = {}): { result: number; struct: Buffer; fds: number[] } {
    const msg = Buffer.alloc(4 + struct.length);
    msg.writeUInt32LE(cmd, 0);
    struct.copy(msg, 4);
    try {
      sys.sendPacket(this.fd, msg, fds);
    } catch (e) {
      // A refused connection (EBUSY: another agent; EPERM: no rights) gets its one reply unasked
      // and is closed, so our send can fail: the reason is in that reply.
      const code = (e as LuoError).code;
      if (code !== 'EPIPE' && code !== 'ECONNRESET') throw e;
      const early = sys.recvPacket(this.fd);
      const r = early && early.data.length >= 4 ? early.data.readInt32LE(0) : 0;
      if (r === -16) throw new LuoError('EBUSY', 'another agent is driving this service (one agent at a time)');
      if (r === -1) throw new LuoError('EPERM', 'this user may not drive this service (root, its own uid, or its allow-list only)');
      throw new LuoError(code, 'the service closed the connection');
    }
    // Bounded where asked: a service that took the connection but answers nothing (its device
    // thread or its main thread stuck) is then an error the caller can report.
    if (opts.timeoutMs !== undefined && !(sys.poll([this.fd], opts.timeoutMs)[0]! & (sys.POLLIN | sys.POLLHUP | sys.POLLERR))) {
      throw new NoAnswerError(`the service took the connection but did not answer ${ioctlName(cmd)} within ${(opts.timeoutMs / 1000).toFixed(1)} s`);
    }
    let pk: sys.Packet | null;
    try {
      pk = sys.recvPacket(this.fd);
    } catch (e) {
      if ((e as LuoError).code !== 'ECONNRESET') throw e;
      throw new LuoError('ECONNRESET', 'the service closed the connection at once (another agent is connected, or this user may not drive it)');
    }
    if (!pk || pk.eof) throw new LuoError('EPIPE', 'the service closed the connection');
    if (pk.data.length < 4) throw new LuoError('EPROTO', `short reply (${pk.data.length} bytes)`);
    const result = pk.data.readInt32LE(0);
    if (result < 0 && !opts.allowFail) {
      for (const fd of pk.fds) sys.close(fd);
      if (result === -16 && pk.data.length === 4) throw new LuoError('EBUSY', 'another agent is driving this service (one agent at a time)');
      if (result === -1 && pk.data.length === 4) throw new LuoError('EPERM', 'this user may not drive this service (root, its own uid, or its allow-list only)');
      throw new LuoError(errnoName(-result), `the service answered ${errnoName(-result)} to ${ioctlName(cmd)}`);
    }
    return { result, struct: pk.data.subarray(4), fds: pk.fds };
  }

  /** Wait for the connection to close (after REBOOT: the exec closes it, a successor's
   *  previous image hangs up). A reply arriving instead means the handover failed after REBOOT
   *  had been accepted: raised as its errno (GET_UPDATE says why). */
  waitClosed(): void {
    for (;;) {
      let pk: sys.Packet | null;
      try {
        pk = sys.recvPacket(this.fd);
      } catch (e) {
        if ((e as LuoError).code === 'ECONNRESET') return; // closed by the exec, hard
        throw e;
      }
      if (!pk || pk.eof) return;
      for (const fd of pk.fds) sys.close(fd);
      const r = pk.data.length >= 4 ? pk.data.readInt32LE(0) : -5;
      throw new LuoError(errnoName(-r), `the handover failed after REBOOT was accepted (${errnoName(-r)}); the service cancelled the update`);
    }
  }

  #closed = false;

  /** Idempotent: a second close must not close whatever reused the fd number meanwhile. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      sys.close(this.fd);
    } catch { /* closed */ }
  }
}

export function ioctlName(cmd: number): string {
  return Object.entries(IOCTL).find(([, v]) => v === cmd)?.[0] ?? `0x${cmd.toString(16)}`;
}

export const structs = {
  fdPreserve: (token: bigint): Buffer => {
    const b = Buffer.alloc(16);
    b.writeUInt32LE(16, 0);
    b.writeBigUInt64LE(token, 8);
    return b;
  },
  token16: (token: bigint): Buffer => structs.fdPreserve(token),
  u32: (v = 0): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(8, 0);
    b.writeUInt32LE(v, 4);
    return b;
  },
  getFdState: (token: bigint, incoming: boolean): Buffer => {
    const b = Buffer.alloc(24);
    b.writeUInt32LE(24, 0);
    b.writeUInt8(incoming ? 1 : 0, 4);
    b.writeBigUInt64LE(token, 8);
    return b;
  },
  setFdEvent: (token: bigint, event: number): Buffer => {
    const b = Buffer.alloc(16);
    b.writeUInt32LE(16, 0);
    b.writeUInt32LE(event, 4);
    b.writeBigUInt64LE(token, 8);
    return b;
  },
};
