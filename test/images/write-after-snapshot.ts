/*
 * A connection closed after its snapshot must abandon the exec (EBUSY): handing the next
 * image a closed fd would make its boot fail. Token 1: a server with one connection (from the
 * test). Token 2: a handler whose snapshot queues a microtask that ends that connection; the
 * microtask runs after every snapshot and before execve. The reboot must fail and the state
 * go back to NORMAL, with the old image still running. Prints JSON lines. (A write that
 * reaches the kernel at once is harmless: it is delivered, and was not in the snapshot.)
 */
import net from 'node:net';
import { boot, connectionsOf, preserveServer, type FileHandler } from 'luo';

const MEDDLE = process.env.MEDDLE ?? 'close';
const luo = boot({ arenaSize: 2 ** 28 });
// MEDDLE=write: the client does not read, so 32 MiB back up in this service; the late write
// then lands in Node's buffer (after the snapshot) instead of the kernel.
const server = net.createServer((s) => s.write(MEDDLE === 'write' ? Buffer.alloc(32 * 2 ** 20, 0x61) : 'hello'));
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
preserveServer(luo, 1, server, { drainTimeoutMs: 200, onUndrained: 'carry' });
process.stdout.write(JSON.stringify({ port: (server.address() as net.AddressInfo).port }) + '\n');
await new Promise<void>((r) => server.once('connection', () => setTimeout(r, 100)));

const meddler: FileHandler = {
  compatible: 'meddler-v1',
  canPreserve: (f) => f === 'meddler',
  snapshot() {
    queueMicrotask(() => {
      for (const s of connectionsOf(server)) {
        if (MEDDLE === 'write') s.write('late!');
        else s.destroy();
      }
    });
    return { fds: [] };
  },
  retrieve: () => null,
};
luo.registerFileHandler(meddler);
luo.preserveFile(2, 'meddler');
await luo.prepare();
const err = await luo.reboot({ file: process.execPath, argv: [process.execPath, '-e', '0'] }).catch((e) => e);
process.stdout.write(JSON.stringify({ code: err.code, message: err.message, state: luo.stateName }) + '\n');
if (MEDDLE === 'write') for (const s of connectionsOf(server)) s.end();
setTimeout(() => process.exit(0), MEDDLE === 'write' ? 5000 : 300);
