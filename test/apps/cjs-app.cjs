// An unmodified CommonJS app (require, no ESM): nothing of luo's in it.
const http = require('node:http');

const version = process.argv[2] || 'v1';
const server = http.createServer((req, res) => res.end(JSON.stringify({ v: version, url: req.url })));
server.keepAliveTimeout = 60000;
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'listening', port: server.address().port, v: version, pid: process.pid }));
});
