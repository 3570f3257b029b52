/*
 * An http.Server with an 'upgrade' handler that keeps the raw socket (a line protocol after a
 * "101"), through the API: preserveServer(..., { upgraded: UPGRADED env: refuse|close }).
 * argv[2] is its version; it says {event:'listening', port, v, pid} once its device is up.
 * Upgraded lines are answered "<version>:<line>"; HTTP requests with the version.
 */
import http from 'node:http';
import type net from 'node:net';
import { boot, preserveServer, restoreServer, startDevice, State } from 'luo';

const version = process.argv[2] ?? 'v1';
const upgraded = (process.env.UPGRADED ?? 'refuse') as 'refuse' | 'close';
const luo = boot();
const server = http.createServer((req, res) => res.end(`${version}\n`));
server.on('upgrade', (req, socket: net.Socket, head: Buffer) => {
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: lines\r\nConnection: Upgrade\r\n\r\n');
  let buf = '';
  const onData = (d: Buffer | string): void => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      socket.write(`${version}:${buf.slice(0, i)}\n`);
      buf = buf.slice(i + 1);
    }
  };
  if (head.length) onData(head);
  socket.on('data', onData);
  socket.on('error', () => {});
});
if (luo.state === State.UPDATED) await restoreServer(luo, 1, server);
else await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
await preserveServer(luo, 1, server, { upgraded });
startDevice(luo);
console.log(JSON.stringify({ event: 'listening', port: (server.address() as net.AddressInfo).port, v: version, pid: process.pid }));
