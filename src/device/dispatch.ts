/*
 * device/dispatch: one request in, one reply out. Pure with respect to transport: the server
 * hands it the datagram and the fds that came with it, and sends what it returns.
 *
 * Check order (v3's luo_ioctl with the documented intent, reference §1.3):
 *   datagram under 4 bytes (no number)        EINVAL
 *   number not in the table                   ENOTTY
 *   no size field, size < min_size            EINVAL
 *   size larger than the bytes that came      EINVAL (v3: EFAULT)
 *   non-zero bytes past the known struct      E2BIG   (zero bytes past it: accepted)
 *   non-zero implicit padding                 EINVAL
 *   wrong number of fds                       EBADF (missing), EINVAL (extra); all closed
 *   the operation's own errno                 as LUO returns it
 * A short struct is zero-extended. The reply's struct is cut to min(user size, known size).
 * Errors are returned (v3 swallowed FD_PRESERVE's); FD_RESTORE's fd is attached only to a
 * successful reply. Whatever goes wrong, received fds are closed and nothing preserved is lost.
 */
import { LuoError, errnoOf } from '../errors.js';
import { selfImage, type Image } from '../handover/index.js';
import { State } from '../luo/abi.js';
import type { Luo } from '../luo/luo.js';
import * as sys from '../sys/index.js';
import { IOCTL, LAYOUTS, REBOOT_SUCCESSOR, decodeLoadImage, encodeCarried, encodeUpdate } from '../uapi/protocol.js';

export interface Reply {
  result: number;
  struct: Buffer;
  /** fd to attach (FD_RESTORE). */
  fd?: number;
  /** Let go of the service's copy once the fd is sent. */
  release?: () => void;
}

export interface Session {
  /** Tokens preserved through this connection (dropped when it closes, as v3). */
  tokens: Set<bigint>;
  /** The image LOAD_IMAGE set (REBOOT's default is the service's own command line). */
  image: Image | null;
  /** Called by REBOOT right before execve, with the success reply to send. */
  sendNow: (r: Reply) => void;
  /** End the agent's connection now (its reader sees end of stream): after a successor
   *  handover, so the agent goes on to the next image while this one waits to exit. */
  hangUp?: () => void;
}

const neg = (name: string): number => -errnoOf(name);
const closeAll = (fds: number[]): void => {
  for (const fd of fds) {
    try {
      sys.close(fd);
    } catch { /* already closed */ }
  }
};

export function encodeReply(r: Reply): Buffer {
  const out = Buffer.alloc(4 + r.struct.length);
  out.writeInt32LE(r.result, 0);
  r.struct.copy(out, 4);
  return out;
}

/** fd-like things FD_RESTORE can give an agent: what it returns, and how to let go of it. */
function fdOfRestored(v: unknown): { fd: number; release: () => void } | null {
  if (typeof v === 'number') return { fd: v, release: () => closeAll([v]) };
  if (v && typeof v === 'object') {
    const o = v as { fd?: unknown; close?: () => void };
    if (typeof o.fd === 'number') return { fd: o.fd, release: () => (typeof o.close === 'function' ? o.close() : closeAll([o.fd as number])) };
  }
  return null;
}

export async function dispatch(luo: Luo, session: Session, data: Buffer, fds: number[]): Promise<Reply> {
  const empty = Buffer.alloc(0);
  if (data.length < 4) {
    closeAll(fds);
    return { result: neg('EINVAL'), struct: empty };
  }
  const cmd = data.readUInt32LE(0);
  const layout = LAYOUTS[cmd];
  if (!layout) {
    closeAll(fds);
    return { result: neg('ENOTTY'), struct: empty };
  }
  const user = data.subarray(4);
  if (user.length < 4) {
    closeAll(fds);
    return { result: neg('EINVAL'), struct: empty };
  }
  const size = user.readUInt32LE(0);
  const known = layout.variable ? Math.max(size, layout.size) : layout.size;
  const bad = (errno: string, cut = Math.min(size, known, user.length)): Reply => {
    closeAll(fds);
    return { result: neg(errno), struct: Buffer.from(user.subarray(0, cut)) };
  };
  if (size < layout.minSize) return bad('EINVAL');
  if (size > user.length) return bad('EINVAL');
  if (size > known && user.subarray(known, size).some((b) => b !== 0)) return bad('E2BIG');
  const k = Buffer.alloc(known);
  user.copy(k, 0, 0, Math.min(size, known));
  for (const [off, len] of layout.padding) if (k.subarray(off, off + len).some((b) => b !== 0)) return bad('EINVAL');
  if (fds.length < layout.fdsIn) return bad('EBADF');
  if (fds.length > layout.fdsIn) return bad('EINVAL');

  const reply = (result: number, fd?: number): Reply => ({ result, struct: k.subarray(0, Math.min(size, known)), ...(fd !== undefined ? { fd } : {}) });
  try {
    switch (cmd) {
      case IOCTL.FD_PRESERVE: {
        const token = k.readBigUInt64LE(8);
        try {
          luo.preserveFile(token, fds[0]!); // the handler keeps its own reference
          session.tokens.add(token);
        } finally {
          closeAll(fds);
        }
        return reply(0);
      }
      case IOCTL.FD_UNPRESERVE: {
        const token = k.readBigUInt64LE(8);
        await luo.unpreserveFile(token);
        session.tokens.delete(token);
        return reply(0);
      }
      case IOCTL.FD_RESTORE: {
        const token = k.readBigUInt64LE(8);
        const compat = luo.state === State.UPDATED ? luo.files.incomingCompatible(token) : undefined;
        if (compat && !['fd-v1', 'fd-v2', 'memfd-v1', 'listener-v1', 'listener-v2'].includes(compat)) {
          throw new LuoError('EOPNOTSUPP', `token ${token} is a ${compat} file: restore it in the service, not through the device`);
        }
        const got = fdOfRestored(await luo.restoreFile(token));
        if (!got) throw new LuoError('EOPNOTSUPP', `token ${token} did not restore to an fd`);
        k.writeInt32LE(0, 4); // the fd itself rides as SCM_RIGHTS
        return { ...reply(0, got.fd), release: got.release };
      }
      case IOCTL.GET_STATE:
        k.writeUInt32LE(luo.state, 4);
        return reply(0);
      case IOCTL.SET_EVENT:
        await luo.setEvent(k.readUInt32LE(4));
        return reply(0);
      case IOCTL.GET_FD_STATE:
        k.writeUInt32LE(luo.getFdState(k.readBigUInt64LE(8), k.readUInt8(4) !== 0), 16);
        return reply(0);
      case IOCTL.SET_FD_EVENT:
        await luo.setFdEvent(k.readBigUInt64LE(8), k.readUInt32LE(4));
        return reply(0);
      case IOCTL.LOAD_IMAGE: {
        const img = decodeLoadImage(k.subarray(0, size));
        if (!img) return bad('EINVAL');
        const self = selfImage();
        const env = img.env.length ? Object.fromEntries(img.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])) : undefined;
        if (img.env.some((kv) => !kv.includes('='))) return bad('EINVAL');
        session.image = img.argv.length
          ? { file: img.argv[0]!, argv: img.argv, env, cwd: img.cwd || process.cwd() }
          : { ...self, env, cwd: img.cwd || self.cwd };
        return reply(0);
      }
      case IOCTL.REBOOT: {
        const flags = k.readUInt32LE(4);
        if ((flags & ~REBOOT_SUCCESSOR) !== 0) return bad('EOPNOTSUPP');
        const commitMs = k.readUInt32LE(8);
        const takeoverMs = k.readUInt32LE(12);
        const readyMs = k.readUInt32LE(20);
        await luo.reboot(session.image ?? selfImage(), {
          // The success reply goes right before the handover, with the pid that will serve.
          beforeExec: (pid) => {
            k.writeInt32LE(pid, 16);
            session.sendNow(reply(0));
          },
          successor: (flags & REBOOT_SUCCESSOR) !== 0,
          ...(commitMs ? { commitTimeoutMs: commitMs } : {}),
          ...(takeoverMs ? { takeoverTimeoutMs: takeoverMs } : {}),
          ...(readyMs ? { successorTimeoutMs: readyMs, upTimeoutMs: readyMs } : {}),
          afterHandover: () => session.hangUp?.(),
        });
        return reply(neg('EIO')); // not reached: reboot only returns by throwing
      }
      case IOCTL.GET_UPDATE: {
        const u = luo.lastUpdate;
        let errno = 0;
        try {
          errno = u?.code ? errnoOf(u.code) : 0;
        } catch { /* a luo code: no errno */ }
        const out = encodeUpdate({
          outcome: u?.outcome ?? 'none', mode: u?.mode ?? 'exec', status: u?.status ?? null, resumed: u?.resumed ?? 0, lost: u?.lost ?? 0,
          number: luo.liveupdateNumber, errno, writtenBack: u?.writtenBack ?? 0, pid: process.pid, reason: u?.reason ?? '', stderr: u?.stderr ?? [],
        }, size);
        return { result: 0, struct: out.subarray(0, size) };
      }
      case IOCTL.GET_CARRIED: {
        const out = encodeCarried(luo.files.carriedReport, luo.liveupdateNumber, size);
        return { result: 0, struct: out.subarray(0, size) };
      }
    }
    return bad('ENOTTY');
  } catch (e) {
    const errno = e instanceof LuoError && e.errno ? e.errno : errnoOf('EIO');
    return reply(-errno);
  }
}
