// An unmodified `ws` app, as a user writes it: nothing of luo's in it. Run under luo with
// `node --import luo/register ws-app.mjs VERSION`. Text messages are JSON requests answered
// with the version that served them and the URL the connection was opened with; binary
// messages are echoed. VERSION "nows": this version forgot its WebSocketServer.
import http from 'node:http';
import { WebSocketServer } from 'ws';

const version = process.argv[2] ?? 'v1';
const server = http.createServer((req, res) => res.end(`${version}\n`));
if (version !== 'nows') {
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws, req) => {
    ws.on('message', (data, isBinary) => {
      if (isBinary) return ws.send(data, { binary: true });
      const m = JSON.parse(String(data));
      if (m.op === 'echo') ws.send(JSON.stringify({ seq: m.seq, v: version, url: req.url, body: m.body }));
      else if (m.op === 'close') ws.close(1000, 'bye');
    });
  });
}
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'listening', port: server.address().port, v: version, pid: process.pid }));
});
