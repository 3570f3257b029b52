/*
 * device/worker: the control socket's I/O thread. It blocks in poll/accept/recvmsg so that
 * the service's event loop never does.
 *
 * Started by Device.prewarm(), it first sleeps until start() gives it the socket. relisten()
 * gives it a new one (flag 4): it closes the old one and serves the new.
 * Loop: poll the listening socket and the agent's connection (250 ms, to notice a stop
 * request) →
 *   a new connection: a peer without rights gets EPERM as its only reply and is closed; while
 *     an agent is connected, a second one gets EBUSY as its only reply and is closed; else it
 *     becomes the agent (the main thread is told, with its credentials);
 *   a datagram from the agent: posted to the main thread, which runs it and answers through
 *     the reply port; this thread sleeps in Atomics.wait until then, sends the reply (and the
 *     fd, if any), and polls again. It counts what it took and what it answered, and when
 *     (uapi/device-words.ts): a guarded image's watchdog says from that where a hung image stood;
 *   the agent hangs up: the main thread is told (it drops what this agent preserved, v3 §2.4).
 * Failures on one connection close that connection; the loop goes on.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import * as sys from '../sys/index.js';
import { W, deviceWords, noteAnswered, noteTaken } from '../uapi/device-words.js';

interface Init { listenFd: number; sab: SharedArrayBuffer; port: MessagePort; uid: number; allowUids: number[]; allowGids: number[] }
const init = workerData as Init;
const words = deviceWords(init.sab);
const { flag } = words;
// Loaded: say so (a successor waits for this before it lets the running image freeze).
Atomics.store(flag, W.STARTED, 1);
Atomics.notify(flag, W.STARTED);
// Started early (Device.prewarm): wait for the socket and the allow-lists.
while (init.listenFd < 0) {
  Atomics.wait(flag, W.GIVEN, 0);
  const m = receiveMessageOnPort(init.port)?.message as { listenFd: number; allowUids: number[]; allowGids: number[] } | undefined;
  if (m) Object.assign(init, m);
}
const EPERM = -1;
const EIO = -5;
const EBUSY = -16;
let agent = -1;

/** A refused connection: its one reply, then close. Closing with the peer's request still
 *  unread would reset the peer (unix_release_sock) and lose the reply, so read and discard
 *  what it sends first (waiting at most 100 ms for it). */
const only = (fd: number, result: number): void => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(result, 0);
  try {
    sys.sendPacket(fd, b);
    if (sys.poll([fd], 100)[0]! & sys.POLLIN) {
      const pk = sys.recvPacket(fd);
      for (const f of pk?.fds ?? []) sys.close(f);
    }
  } catch { /* it left already */ }
  sys.close(fd);
};

function hangup(): void {
  try {
    sys.close(agent);
  } catch { /* closed */ }
  agent = -1;
  parentPort!.postMessage({ type: 'close' });
}

/** The main thread's messages: replies, and (after a failed handover) a new listening socket. */
let reply: { data: Uint8Array; fd?: number } | null = null;
function takeMessages(): void {
  for (;;) {
    const m = receiveMessageOnPort(init.port)?.message as { data?: Uint8Array; fd?: number; listenFd?: number } | undefined;
    if (!m) return;
    if (m.listenFd !== undefined && m.data === undefined) {
      // The service listens again (it resumed after a failed handover): a new socket at the path.
      try {
        sys.close(init.listenFd);
      } catch { /* closed */ }
      init.listenFd = m.listenFd;
    } else reply = m as { data: Uint8Array; fd?: number };
  }
}

while (Atomics.load(flag, W.STOP) === 0) {
  if (Atomics.exchange(flag, W.RELISTEN, 0) === 1) takeMessages();
  const polled = agent;
  const fds = agent >= 0 ? [init.listenFd, agent] : [init.listenFd];
  const rev = sys.poll(fds, 250);
  if (rev[0]! & sys.POLLIN) {
    const c = sys.accept(init.listenFd, true);
    if (c >= 0) {
      let cred: sys.PeerCred | null = null;
      try {
        cred = sys.peerCred(c);
      } catch { /* treated as no rights */ }
      const allowed = cred !== null && (cred.uid === 0 || cred.uid === init.uid || init.allowUids.includes(cred.uid) || init.allowGids.includes(cred.gid));
      if (!allowed) {
        only(c, EPERM);
        parentPort!.postMessage({ type: 'denied', cred });
      } else if (agent >= 0 && !(sys.poll([agent], 0)[0]! & (sys.POLLHUP | sys.POLLERR))) {
        only(c, EBUSY);
      } else {
        if (agent >= 0) hangup(); // the previous agent is gone; this poll had not seen it yet
        agent = c;
        parentPort!.postMessage({ type: 'open', cred });
      }
    }
  }
  // rev[1] is the polled agent's: one taken in its place above is read at the next poll.
  if (agent >= 0 && agent === polled && rev[1]) {
    let pk: sys.Packet | null;
    try {
      pk = sys.recvPacket(agent, 65536);
    } catch {
      hangup();
      continue;
    }
    if (!pk) continue;
    // A zero-length read is the agent hanging up only with POLLHUP; otherwise it is an empty
    // datagram (legal on SEQPACKET), answered like any malformed request.
    if (pk.eof && rev[1]! & (sys.POLLHUP | sys.POLLERR)) {
      hangup();
      continue;
    }
    Atomics.store(flag, W.REPLY, 0);
    parentPort!.postMessage({ type: 'req', data: pk.data, fds: pk.fds, truncated: pk.truncated || pk.fdsTruncated, agent });
    noteTaken(words);
    Atomics.wait(flag, W.REPLY, 0);
    takeMessages();
    // Posted before the flag, so always here; an agent never waits for a reply that is not.
    const msg = (reply as { data: Uint8Array; fd?: number } | null) ?? { data: new Uint8Array(new Int32Array([EIO]).buffer) };
    reply = null;
    try {
      sys.sendPacket(agent, msg.data, msg.fd !== undefined ? [msg.fd] : []);
    } catch {
      hangup();
    }
    noteAnswered(words);
    Atomics.store(flag, W.REPLY, 2); // sent: the main thread may release the fd
    Atomics.notify(flag, W.REPLY);
  }
}
