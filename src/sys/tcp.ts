/*
 * sys/tcp: what the kernel knows of a TCP connection's bytes, for telling whether another
 * process used it. No state.
 *
 *   consumed   bytes of the connection's input read out of the kernel by any process, over the
 *              connection's life: TCP_INFO's tcpi_bytes_received (offset 128) − SIOCINQ
 *   written    bytes of its output written into the kernel by any process: tcpi_bytes_acked
 *              (offset 120) + SIOCOUTQ
 * The peer sending more changes neither. A FIN counts as one byte of sequence space in both
 * (received: as soon as it arrives, read or not; written: once shutdown or close queued it).
 * Not a TCP socket (a Unix one, a pipe): null.
 */
import { SysError } from '../errors.js';
import { koffiLib } from './ffi.js';

type Fn = (...a: unknown[]) => unknown;
let lib: { getsockopt: Fn; ioctl: Fn } | undefined;

function tcp(): { getsockopt: Fn; ioctl: Fn } {
  if (lib) return lib;
  const { so } = koffiLib();
  lib = {
    getsockopt: so.func('int getsockopt(int fd, int level, int name, _Out_ uint8_t *val, _Inout_ uint32_t *len)'),
    ioctl: so.func('int ioctl(int fd, unsigned long req, _Out_ int *val)'),
  };
  return lib;
}

const IPPROTO_TCP = 6;
const TCP_INFO = 11;
const SIOCINQ = 0x541b;
const SIOCOUTQ = 0x5411;
const ENOPROTOOPT = 92;
const EOPNOTSUPP = 95;
const ENOTSOCK = 88;
const INFO_SIZE = 256;

export interface StreamCounters {
  consumed: number;
  written: number;
  /** The peer's FIN has arrived (and counts in consumed). */
  finReceived: boolean;
  /** This side's FIN is queued or sent (and counts in written). */
  finSent: boolean;
}

// TCP states (include/net/tcp_states.h)
const FIN_RECEIVED = new Set([6, 8, 9, 11]); // TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING
const FIN_SENT = new Set([4, 5, 6, 9, 11]); // FIN_WAIT1, FIN_WAIT2, TIME_WAIT, LAST_ACK, CLOSING

const info = Buffer.alloc(INFO_SIZE);

/** The connection's counters, or null when `fd` is not a TCP socket. SysError otherwise. */
export function tcpCounters(fd: number): StreamCounters | null {
  const { getsockopt, ioctl } = tcp();
  const len = [INFO_SIZE];
  info.fill(0);
  if ((getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, len) as number) < 0) {
    const e = koffiLib().koffi.errno();
    if (e === ENOPROTOOPT || e === EOPNOTSUPP || e === ENOTSOCK) return null;
    throw new SysError('getsockopt(TCP_INFO)', e, `fd ${fd}`);
  }
  if (len[0]! < 136) throw new SysError('getsockopt(TCP_INFO)', 71, `fd ${fd}: a ${len[0]}-byte tcp_info has no byte counters (Linux ≥ 4.2 has)`);
  const inq = [0];
  const outq = [0];
  if ((ioctl(fd, SIOCINQ, inq) as number) < 0) throw new SysError('ioctl(SIOCINQ)', koffiLib().koffi.errno(), `fd ${fd}`);
  if ((ioctl(fd, SIOCOUTQ, outq) as number) < 0) throw new SysError('ioctl(SIOCOUTQ)', koffiLib().koffi.errno(), `fd ${fd}`);
  const received = Number(info.readBigUInt64LE(128));
  const acked = Number(info.readBigUInt64LE(120));
  const state = info[0]!;
  return { consumed: received - inq[0]!, written: acked + outq[0]!, finReceived: FIN_RECEIVED.has(state), finSent: FIN_SENT.has(state) };
}
