/*
 * handlers/prebuilt: net.Socket objects a successor builds, before the freeze, on the
 * connection fds the running image sent it early (successor.ts: presend), so that adopting a
 * connection in the pause is a lookup, not the construction of a socket (~40 µs each, in
 * code V8 has not optimized). They do not read: a built socket makes no first read
 * (manualStart) until adoptConnection starts it.
 * Lifecycle: prebuild(fds) in the presend (each fd then owned: sys/owners.ts, so that a
 * carried fd closed by luo, such as an early copy the handover drops, or a token released
 * unrestored at FINISH, is closed by destroying its socket, never behind it) → take(fd) in
 * adoptConnection (the socket is the caller's from then on) → whatever is never taken is
 * destroyed when luo closes its fd. An fd that cannot become a socket (not a stream: the
 * hint was wrong) is left as it is: adoption then builds its socket as before.
 */
import net from 'node:net';
import * as sys from '../sys/index.js';
import { NO_FIRST_READ } from './node-internals.js';

const built = new Map<number, net.Socket>();

/** Build a socket, not reading, on each of `fds` (connections sent early). How many were built. */
export function prebuild(fds: readonly number[]): number {
  let n = 0;
  for (const fd of fds) {
    if (built.has(fd)) continue;
    let s: net.Socket;
    try {
      s = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: false, ...NO_FIRST_READ });
    } catch {
      continue;
    }
    s.on('error', noop); // an error before adoption: the adopter's listeners see later ones
    built.set(fd, s);
    sys.own(fd, () => {
      built.delete(fd);
      s.destroy();
    });
    n++;
  }
  return n;
}

function noop(): void {}

/** The socket built on `fd`, if any; it is the caller's from now on (it is not reading). */
export function take(fd: number): net.Socket | null {
  const s = built.get(fd);
  if (!s) return null;
  built.delete(fd);
  sys.disown(fd);
  s.off('error', noop);
  if (s.destroyed) return null;
  return s;
}
