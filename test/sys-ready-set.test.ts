// sys.ReadySet (sys/epoll.ts): which of many fds have input, at a cost in the ready ones only
// (a successor registers every connection before the freeze and asks once after it).
import assert from 'node:assert/strict';
import net from 'node:net';
import test from 'node:test';
import { stopReading } from '../src/handlers/node-internals.js';
import * as sys from '../src/sys/index.js';


/** `n` loopback connections whose server side does not read (stopReading: input stays in the
 *  kernel; pause() would not stop libuv reading), and how to close them all. */
async function unreadConnections(n: number): Promise<{ accepted: net.Socket[]; clients: net.Socket[]; close(): void }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted: net.Socket[] = [];
  const all = new Promise<void>((done) => server.on('connection', (s) => {
    stopReading(s);
    if (accepted.push(s) === n) done();
  }));
  const clients = await Promise.all(Array.from({ length: n }, () => new Promise<net.Socket>((r) => {
    const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1', () => r(c));
  })));
  await all;
  return {
    accepted,
    clients,
    close() {
      clients.forEach((c) => c.destroy());
      server.close();
      accepted.forEach((s) => s.destroy());
    },
  };
}

test('a readiness set reports exactly the fds with input or hung up, skips what cannot be polled, and refuses use once closed', async () => {
  const { accepted, clients, close } = await unreadConnections(50);
  // The set watches copies of the server-side fds (as a successor does: other numbers, the
  // same connections), and a memfd, which epoll refuses.
  const copies = accepted.map((s) => sys.dup((s as unknown as { _handle: { fd: number } })._handle.fd));
  const memfd = sys.memfdCreate('not-pollable');
  const set = new sys.ReadySet();
  try {
    assert.equal(set.add([...copies, memfd]), 1, 'the memfd is skipped');
    assert.equal(set.size, 50);
    assert.deepEqual(set.ready(), []);
    clients[3]!.write('x');
    clients[17]!.write('y');
    clients[42]!.end();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(set.ready().sort((a, b) => a - b), [copies[3]!, copies[17]!, copies[42]!].sort((a, b) => a - b));
    assert.deepEqual(set.ready().sort((a, b) => a - b), [copies[3]!, copies[17]!, copies[42]!].sort((a, b) => a - b), 'level-triggered: asked again, the same answer');
  } finally {
    set.close();
    set.close(); // idempotent
    copies.forEach((fd) => sys.close(fd));
    sys.close(memfd);
    close();
  }
  assert.throws(() => set.ready(), { code: 'EBADF' });
  assert.throws(() => set.add([0]), { code: 'EBADF' });
});

test('a one-shot readiness set reports each fd once, whatever comes on it afterwards', async () => {
  const { accepted, clients, close } = await unreadConnections(8);
  const copies = accepted.map((s) => sys.dup((s as unknown as { _handle: { fd: number } })._handle.fd));
  const set = new sys.ReadySet();
  /** Ask until `fd` is reported (loopback delivers within the writer's call; the loop is a guard). */
  const until = async (fd: number): Promise<number[]> => {
    const seen: number[] = [];
    for (let i = 0; i < 500 && !seen.includes(fd); i++) {
      seen.push(...set.ready());
      if (!seen.includes(fd)) await new Promise((r) => setTimeout(r, 2));
    }
    return seen;
  };
  try {
    set.add(copies, { oneShot: true });
    assert.deepEqual(set.ready(), []);
    clients[3]!.write('x');
    assert.deepEqual(await until(copies[3]!), [copies[3]!]);
    assert.deepEqual(set.ready(), [], 'reported once: not again, though its input is still there');
    // More on it, then something on another: the other is reported, it is not.
    clients[3]!.write('more');
    clients[5]!.write('y');
    assert.deepEqual(await until(copies[5]!), [copies[5]!]);
  } finally {
    set.close();
    copies.forEach((fd) => sys.close(fd));
    close();
  }
});

test('a readiness set made over copies reports each under the key given for it, and works where it is passed to (adopt: an epoll instance only)', async () => {
  const { accepted, clients, close } = await unreadConnections(6);
  const mine = accepted.map((s) => (s as unknown as { _handle: { fd: number } })._handle.fd);
  // A successor's copies (other numbers), registered under this process's numbers.
  const copies = mine.map((fd) => sys.dup(fd));
  const made = new sys.ReadySet();
  const memfd = sys.memfdCreate('not-an-epoll');
  let adopted: sys.ReadySet | null = null;
  try {
    assert.equal(made.add(copies, { keys: mine }), 0);
    // What the receiving side gets: another fd for the same epoll instance; the maker lets go
    // of its own (closing a copy of a registered fd does not drop its registration).
    adopted = sys.ReadySet.adopt(sys.dup(made.fd), 6);
    made.close();
    copies.forEach((fd) => sys.close(fd));
    assert.deepEqual(adopted.ready(), []);
    clients[1]!.write('x');
    clients[4]!.end();
    const seen = new Set<number>();
    for (let i = 0; i < 500 && seen.size < 2; i++) {
      for (const fd of adopted.ready()) seen.add(fd);
      if (seen.size < 2) await new Promise((r) => setTimeout(r, 2));
    }
    assert.deepEqual([...seen].sort((a, b) => a - b), [mine[1]!, mine[4]!].sort((a, b) => a - b), 'reported under the keys: this process\'s numbers');
    assert.throws(() => sys.ReadySet.adopt(memfd, 1), (e: Error & { code?: string }) => e.code === 'EINVAL' && /not an epoll instance/.test(e.message));
    assert.throws(() => sys.ReadySet.adopt(999_999, 1), { code: 'EBADF' });
  } finally {
    made.close();
    adopted?.close();
    sys.close(memfd);
    close();
  }
});
