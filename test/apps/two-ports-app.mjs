// An app listening on two ports; version "one-port" no longer listens on the second.
import http from 'node:http';

const version = process.argv[2] ?? 'v1';
const main = http.createServer((req, res) => res.end(`${version}\n`));
const extra = http.createServer((req, res) => res.end(`extra ${version}\n`));
main.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const say = () => console.log(JSON.stringify({ event: 'listening', port: main.address().port, extra: extra.address()?.port ?? null, v: version, pid: process.pid }));
  if (version === 'one-port') say();
  else extra.listen(Number(process.env.EXTRA_PORT ?? 0), '127.0.0.1', say);
});
