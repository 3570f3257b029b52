// An unmodified fastify 5 app: nothing of luo's in it.
import Fastify from 'fastify';

const version = process.argv[2] ?? 'v1';
const app = Fastify();
app.get('/', async () => version);
app.get('/n/:n', async (req) => ({ n: Number(req.params.n), v: version }));
await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' });
console.log(JSON.stringify({ event: 'listening', port: app.server.address().port, v: version, pid: process.pid }));
