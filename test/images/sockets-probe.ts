/*
 * Generation 1: tries to preserve a TLS server and a TLS socket (both refused), preserves a
 * listening server (token 1), a client connection to the test's peer (token 2, after saying
 * "hello-1" on it) and a bound UDP socket (token 3); prints its ports; after 400 ms (the test
 * sends things meanwhile) PREPAREs and reboots. Generation 2 restores all three and reports
 * what arrives on each.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import { boot, preserveServer, State } from '../../src/index.js';

const luo = boot({ arenaSize: 2 ** 28 });
const say = (o: object): void => void process.stdout.write(JSON.stringify(o) + '\n');
const code = (fn: () => unknown): string => {
  try {
    fn();
    return 'ok';
  } catch (e) {
    return (e as Error).message; // "CODE: cause"
  }
};

if (luo.state !== State.UPDATED) {
  const refusedServer = code(() => luo.preserveFile(9, tls.createServer({})));
  const refusedSocket = code(() => luo.preserveFile(10, new tls.TLSSocket(new net.Socket())));
  const refusedHttps = code(() => preserveServer(luo, 11, tls.createServer({})));
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  luo.preserveFile(1, server);
  const conn = net.connect(Number(process.env.PEER_PORT), '127.0.0.1');
  await new Promise((r) => conn.once('connect', r));
  conn.write('hello-1');
  luo.preserveFile(2, conn);
  const udp = dgram.createSocket('udp4');
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
  const gen1Datagrams: string[] = [];
  udp.on('message', (m) => gen1Datagrams.push(m.toString()));
  luo.preserveFile(3, udp);
  say({ gen: 1, refusedServer, refusedSocket, refusedHttps, listenPort: (server.address() as net.AddressInfo).port, udpPort: udp.address().port, localPort: conn.localPort, kinds: luo.files.describeOutgoing().map((f) => f.compatible) });
  await new Promise((r) => setTimeout(r, 400));
  await luo.prepare();
  await luo.reboot({ file: process.execPath, argv: [process.execPath, process.argv[1]!] }, {
    beforeExec: () => say({ gen: 1.5, datagrams: gen1Datagrams }), // the last word of image 1
  });
} else {
  const { fd } = await luo.restoreFile<{ fd: number }>(1);
  const server = net.createServer((s) => s.end('hi from gen 2'));
  await new Promise<void>((r) => server.listen({ fd }, r));
  const conn = await luo.restoreFile<net.Socket>(2);
  const udp = await luo.restoreFile<dgram.Socket>(3);
  const datagrams: string[] = [];
  udp.on('message', (m) => datagrams.push(m.toString()));
  let onConn = '';
  conn.on('data', (d) => (onConn += d));
  conn.write('hello-2');
  await new Promise((r) => setTimeout(r, 300));
  say({ gen: 2, onConn, localPort: conn.localPort, remotePort: conn.remotePort, datagrams, udpPort: udp.address().port, listenPort: (server.address() as net.AddressInfo).port });
  await luo.finish();
  conn.destroy();
  udp.close();
  server.close();
}
