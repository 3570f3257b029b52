// An unmodified express 5 app: nothing of luo's in it.
import express from 'express';

const version = process.argv[2] ?? 'v1';
const app = express();
app.get('/', (req, res) => res.send(version));
app.get('/n/:n', (req, res) => res.json({ n: Number(req.params.n), v: version }));
const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'listening', port: server.address().port, v: version, pid: process.pid }));
});
