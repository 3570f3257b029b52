/*
 * Handovers damaged after the previous image wrote them, in ways that pass every structural
 * check, chosen by DAMAGE (the first image PREPAREs, FREEZEs through the selftest hook,
 * damages, then reboots in place; the next image says what it booted as):
 *   payload   one byte of a subsystem's u64 payload flipped in the LUO tree
 *   number    the LUO tree's liveupdate-number rewritten (a valid tree of the same size)
 *   table     one byte of the server's connections table flipped (caught when restoreServer
 *             reads it, after boot)
 * The first image listens (a listener under token 1, or a server with one connection for
 * "table"). The next image, booted NORMAL (LUO_ON_CORRUPT=cold), listens on the same port
 * itself, and says whether that worked and how many fds of the previous image it still holds.
 */
import net from 'node:net';
import { boot, fdt, preserveServer, restoreServer, Selftests, State } from '../../src/index.js';
import * as sys from '../../src/sys/index.js';

const DAMAGE = process.env.DAMAGE!;
const luo = boot({ arenaSize: 2 ** 28, selftests: true });
const say = (o: object): void => void process.stdout.write(JSON.stringify(o) + '\n');
const inherited = (): number => sys.openFds().filter((fd) => {
  try {
    return fd > 2 && !sys.isCloexec(fd);
  } catch {
    return false; // the directory fd readdir used
  }
}).length;

if (luo.state === State.UPDATED) {
  // Only "table" gets here (and, brought back by the guard, the previous image): the damage is
  // in a file's payload, read at restore.
  const server = net.createServer();
  await restoreServer(luo, 1, server);
  say({ restored: true });
} else if (process.env.DAMAGE_GEN === '2') {
  {
    const server = net.createServer();
    const listened = await new Promise<string>((r) => {
      server.once('error', (e) => r((e as NodeJS.ErrnoException).code ?? 'error'));
      server.listen(Number(process.env.DAMAGE_PORT), '127.0.0.1', () => r('ok'));
    });
    say({ booted: luo.stateName, listened, inherited: inherited() });
    server.close();
  }
} else {
  const server = net.createServer((s) => s.on('error', () => {}));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  if (DAMAGE === 'table') {
    preserveServer(luo, 1, server);
    const c = net.connect(port, '127.0.0.1');
    await new Promise((r) => server.once('connection', r));
    void c;
  } else luo.preserveFile(1, server);
  await luo.registerSubsystem({ name: 'marked', prepare: () => 0x1122334455667788n });
  await luo.prepare();
  await new Selftests(luo).freeze();
  const addr = luo.outgoingTreeAddress!;
  const tree = luo.kho.readFdt(addr);
  const view = luo.kho.view(addr, fdt.readHeader(luo.kho.view(addr, 40), true).totalsize);
  if (DAMAGE === 'payload') {
    const at = Buffer.from(view).indexOf(Buffer.from('1122334455667788', 'hex'));
    view[at + 3]! ^= 0x01;
  } else if (DAMAGE === 'number') {
    tree.root.setU64('liveupdate-number', 41);
    view.set(fdt.encode(tree));
  } else if (DAMAGE === 'table') {
    const files = luo.kho.readFdt(Number(tree.root.child('subsystems')!.u64('file-descriptors')));
    const table = Number(files.root.child('0x1')!.u64('data'));
    luo.kho.view(table + 36, 1)[0]! ^= 0x40;
  }
  await luo.reboot({ file: process.execPath, argv: [process.execPath, process.argv[1]!], env: { ...process.env, DAMAGE_GEN: '2', DAMAGE_PORT: String(port) } });
}
