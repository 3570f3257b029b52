/*
 * bench/ws-app: the WebSocket service of `npm run bench` (bench/ws.ts), written as a user
 * writes one, with nothing of luo's in it: an http.Server with a `ws` WebSocketServer; each
 * text message {seq} is answered {seq, v} (v: the version serving). The same file runs under
 * `node --import luo/register` (luo) and under pm2's cluster mode.
 *
 * Lifecycle: listens on --port (127.0.0.1), prints {"event":"listening",port,v,pid}, and tells
 * pm2 it is ready (process.send) when run by it. SIGINT (pm2 reload's graceful stop) closes
 * every connection with 1001 "going away", as a well-behaved service does, and exits.
 */
import http from 'node:http';
import { WebSocketServer } from 'ws';

const argv = process.argv.slice(2);
const opt = (n: string, d: string): string => {
  const i = argv.indexOf(`--${n}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : d;
};
// The version it says it is: --version, or WS_VERSION (pm2 passes a release's version that way).
const version = process.env.WS_VERSION || opt('version', 'v1');
const port = Number(opt('port', '0'));

const server = http.createServer((_req, res) => res.end(`${version}\n`));
const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    const m = JSON.parse(String(data)) as { seq: number };
    ws.send(`{"seq":${m.seq},"v":"${version}"}`);
  });
});
server.listen(port, '127.0.0.1', () => {
  const a = server.address() as { port: number };
  console.log(JSON.stringify({ event: 'listening', port: a.port, v: version, pid: process.pid }));
  process.send?.('ready');
});
process.on('SIGINT', () => {
  for (const c of wss.clients) c.close(1001, 'going away');
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
});
