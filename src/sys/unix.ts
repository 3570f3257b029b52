/*
 * sys/unix: SOCK_SEQPACKET Unix sockets with fds passed as SCM_RIGHTS, and peer credentials
 * (SO_PEERCRED). Node's net module has neither, so they go through koffi like the rest of libc.
 *
 * Lifecycle: listen()/connect() return close-on-exec fds the caller owns (close them with
 * sys.close); accept() likewise. send/recv move one whole datagram with its fds. A receive
 * that returns fds the caller does not want must close them (recvPacket hands them all back).
 * Every failure is a SysError naming the call; nothing is left half-open on failure.
 */
import { SysError, fail } from '../errors.js';
import { koffiLib, struct } from './ffi.js';
import { close, fdLimit } from './libc.js';

const AF_UNIX = 1;
const SOCK_SEQPACKET = 5;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const SO_PEERCRED = 17;
const MSG_CMSG_CLOEXEC = 0x40000000;
const MSG_NOSIGNAL = 0x4000;
const MSG_CTRUNC = 0x8;
const MSG_TRUNC = 0x20;
export const POLLIN = 0x1;
export const POLLHUP = 0x10;
export const POLLERR = 0x8;
/** The most fds one datagram can carry (SCM_MAX_FD). */
export const MAX_FDS = 253;

type Fn = (...a: unknown[]) => unknown;
interface UnixLib { pollRaw: Fn; socketpair: Fn; socket: Fn; bind: Fn; listen: Fn; accept4: Fn; connect: Fn; sendmsg: Fn; recvmsg: Fn; recv: Fn; getsockopt: Fn; poll: Fn; shutdown: Fn }
let u: UnixLib | undefined;

function lib(): UnixLib {
  if (u) return u;
  const { koffi, so } = koffiLib();
  // Named types, referred to by name in the declarations below.
  struct('luo_sockaddr_un', { sun_family: 'uint16_t', sun_path: koffi.array('char', 108) });
  const iovec = struct('luo_iovec', { iov_base: 'void *', iov_len: 'size_t' });
  struct('luo_msghdr', {
    msg_name: 'void *', msg_namelen: 'uint32_t', msg_iov: koffi.pointer(iovec), msg_iovlen: 'size_t',
    msg_control: 'void *', msg_controllen: 'size_t', msg_flags: 'int',
  });
  struct('luo_ucred', { pid: 'int32_t', uid: 'uint32_t', gid: 'uint32_t' });
  struct('luo_pollfd', { fd: 'int', events: 'short', revents: 'short' });
  u = {
    socketpair: so.func('int socketpair(int domain, int type, int protocol, int *sv)'),
    socket: so.func('int socket(int domain, int type, int protocol)'),
    bind: so.func('int bind(int fd, const luo_sockaddr_un *addr, uint32_t len)'),
    listen: so.func('int listen(int fd, int backlog)'),
    accept4: so.func('int accept4(int fd, void *addr, void *len, int flags)'),
    connect: so.func('int connect(int fd, const luo_sockaddr_un *addr, uint32_t len)'),
    sendmsg: so.func('intptr_t sendmsg(int fd, const luo_msghdr *msg, int flags)'),
    recvmsg: so.func('intptr_t recvmsg(int fd, _Inout_ luo_msghdr *msg, int flags)'),
    recv: so.func('intptr_t recv(int fd, void *buf, size_t len, int flags)'),
    getsockopt: so.func('int getsockopt(int fd, int level, int name, _Out_ luo_ucred *val, _Inout_ uint32_t *len)'),
    poll: so.func('int poll(_Inout_ luo_pollfd *fds, unsigned long n, int timeout)'),
    pollRaw: so.func('int poll(void *fds, unsigned long n, int timeout)'),
    shutdown: so.func('int shutdown(int fd, int how)'),
  };
  return u;
}

const errno = (): number => koffiLib().koffi.errno();

function addr(path: string): { sun_family: number; sun_path: string } {
  if (Buffer.byteLength(path) >= 108) throw fail('ENAMETOOLONG', `socket path longer than 107 bytes: ${path}`);
  return { sun_family: AF_UNIX, sun_path: path };
}

function newSocket(nonblock: boolean): number {
  const fd = lib().socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0) as number;
  if (fd < 0) throw new SysError('socket', errno());
  return fd;
}

/** A listening SOCK_SEQPACKET socket bound at `path` (which must not exist). */
export function seqpacketListen(path: string, backlog = 16, nonblock = false): number {
  const fd = newSocket(nonblock);
  try {
    if ((lib().bind(fd, addr(path), 110) as number) < 0) throw new SysError('bind', errno(), path);
    if ((lib().listen(fd, backlog) as number) < 0) throw new SysError('listen', errno(), path);
    return fd;
  } catch (e) {
    close(fd);
    throw e;
  }
}

/** A connected pair of SOCK_SEQPACKET sockets, both close-on-exec. */
export function seqpacketPair(): [number, number] {
  const sv = new Int32Array([-1, -1]);
  if ((lib().socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) as number) < 0) throw new SysError('socketpair', errno());
  return [sv[0]!, sv[1]!];
}

/** Connect to a SOCK_SEQPACKET socket at `path`. */
export function seqpacketConnect(path: string): number {
  const fd = newSocket(false);
  if ((lib().connect(fd, addr(path), 110) as number) < 0) {
    const e = errno();
    close(fd);
    throw new SysError('connect', e, path);
  }
  return fd;
}

/** accept4 with FD_CLOEXEC; -1 when nothing is waiting on a non-blocking socket. */
export function accept(fd: number, nonblock = false): number {
  const c = lib().accept4(fd, null, null, SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0)) as number;
  if (c < 0) {
    const e = errno();
    if (e === 11) return -1; // EAGAIN
    throw new SysError('accept4', e);
  }
  return c;
}

/** Send one datagram with its fds (SCM_RIGHTS). Never raises SIGPIPE. */
export function sendPacket(fd: number, data: Uint8Array, fds: number[] = []): void {
  if (fds.length > MAX_FDS) throw fail('EINVAL', `at most ${MAX_FDS} fds per datagram`);
  let control: Buffer | null = null;
  if (fds.length) {
    const len = 16 + 4 * fds.length;
    control = Buffer.alloc((len + 7) & ~7);
    control.writeBigUInt64LE(BigInt(len), 0);
    control.writeInt32LE(SOL_SOCKET, 8);
    control.writeInt32LE(SCM_RIGHTS, 12);
    fds.forEach((f, i) => control!.writeInt32LE(f, 16 + 4 * i));
  }
  const body = Buffer.from(data.buffer, data.byteOffset, data.length);
  const msg = { msg_name: null, msg_namelen: 0, msg_iov: [{ iov_base: body, iov_len: body.length }], msg_iovlen: 1, msg_control: control, msg_controllen: control?.length ?? 0, msg_flags: 0 };
  const n = lib().sendmsg(fd, msg, MSG_NOSIGNAL) as number | bigint;
  if (Number(n) < 0) throw new SysError('sendmsg', errno());
}

export interface Packet {
  /** The datagram's bytes (empty at end of stream). */
  data: Buffer;
  /** fds that came with it, close-on-exec; the caller owns them. */
  fds: number[];
  /** The datagram was longer than the buffer (the rest is lost). */
  truncated: boolean;
  /** More fds were sent than fit (they were closed by the kernel). */
  fdsTruncated: boolean;
  /** The peer closed (a zero-length read). */
  eof: boolean;
}

const MSG_PEEK = 0x2;

/**
 * Receive one datagram and its fds. `null` when non-blocking and nothing is there. The buffer
 * is `max` bytes (a longer datagram is cut: `truncated`), or with `grow` as big as the
 * datagram waiting (peeked first with MSG_TRUNC, which makes the kernel say its whole length):
 * a handover's header names every fd it sends, 114 KiB of JSON at 19 000 connections, and a
 * fixed 64 KiB buffer cut it.
 */
export function recvPacket(fd: number, max = 65536, opts: { grow?: boolean } = {}): Packet | null {
  if (opts.grow) {
    const waiting = Number(lib().recv(fd, null, 0, MSG_PEEK | MSG_TRUNC) as number | bigint);
    if (waiting < 0) {
      const e = errno();
      if (e === 11) return null;
      throw new SysError('recvmsg', e);
    }
    max = Math.max(max, waiting);
  }
  const body = Buffer.alloc(max);
  const control = Buffer.alloc(16 + 4 * MAX_FDS + 8);
  const msg = { msg_name: null, msg_namelen: 0, msg_iov: [{ iov_base: body, iov_len: body.length }], msg_iovlen: 1, msg_control: control, msg_controllen: control.length, msg_flags: 0 };
  const r = Number(lib().recvmsg(fd, msg, MSG_CMSG_CLOEXEC) as number | bigint);
  if (r < 0) {
    const e = errno();
    if (e === 11) return null;
    throw new SysError('recvmsg', e);
  }
  const fds: number[] = [];
  let off = 0;
  const clen = Number(msg.msg_controllen);
  while (off + 16 <= clen) {
    const len = Number(control.readBigUInt64LE(off));
    if (len < 16 || off + len > clen) break;
    if (control.readInt32LE(off + 8) === SOL_SOCKET && control.readInt32LE(off + 12) === SCM_RIGHTS) {
      for (let p = off + 16; p + 4 <= off + len; p += 4) fds.push(control.readInt32LE(p));
    }
    off += (len + 7) & ~7;
  }
  return { data: body.subarray(0, Math.min(r, max)), fds, truncated: (msg.msg_flags & MSG_TRUNC) !== 0, fdsTruncated: (msg.msg_flags & MSG_CTRUNC) !== 0, eof: r === 0 };
}

/** shutdown(SHUT_WR): the peer reads what was sent, then end of stream; this end still reads. */
export function shutdownWrite(fd: number): void {
  if ((lib().shutdown(fd, 1) as number) < 0) throw new SysError('shutdown', errno());
}

/** shutdown(SHUT_RDWR) on a listening socket: connects to it fail with ECONNREFUSED from now
 *  on; the fd stays open (and whoever polls it is not disturbed). */
export function stopListening(fd: number): void {
  if ((lib().shutdown(fd, 2) as number) < 0) throw new SysError('shutdown', errno());
}

export interface PeerCred { pid: number; uid: number; gid: number }

export function peerCred(fd: number): PeerCred {
  const cred = { pid: 0, uid: 0, gid: 0 };
  const len = [12];
  if ((lib().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, len) as number) < 0) throw new SysError('getsockopt(SO_PEERCRED)', errno());
  return cred;
}

/**
 * poll(2) without waiting on many fds at once (one call, the pollfd array in one buffer):
 * for each fd, whether it is readable, hung up or in error right now.
 */
export function readyNow(fds: number[]): Uint8Array {
  const buf = Buffer.alloc(8 * fds.length);
  for (let i = 0; i < fds.length; i++) {
    buf.writeInt32LE(fds[i]!, 8 * i);
    buf.writeInt16LE(POLLIN, 8 * i + 4);
  }
  // poll(2) refuses more fds per call than RLIMIT_NOFILE (EINVAL): ask in slices below it.
  const slice = fds.length > 64 ? Math.max(1, Math.min(POLL_SLICE, fdLimit().soft - 1)) : POLL_SLICE;
  for (let at = 0; at < fds.length; at += slice) {
    const n = Math.min(slice, fds.length - at);
    if ((lib().pollRaw(buf.subarray(8 * at), n, 0) as number) < 0) throw new SysError('poll', errno());
  }
  const out = new Uint8Array(fds.length);
  for (let i = 0; i < fds.length; i++) out[i] = buf.readInt16LE(8 * i + 6) !== 0 ? 1 : 0;
  return out;
}

const POLL_SLICE = 1024;

/** poll(2) on fds for POLLIN; returns each fd's revents. Blocks up to timeoutMs (-1: forever). */
export function poll(fds: number[], timeoutMs: number): number[] {
  const arr = fds.map((fd) => ({ fd, events: POLLIN, revents: 0 }));
  const r = lib().poll(arr, arr.length, timeoutMs) as number;
  if (r < 0) {
    const e = errno();
    if (e === 4) return fds.map(() => 0); // EINTR
    throw new SysError('poll', e);
  }
  return arr.map((p) => p.revents);
}
