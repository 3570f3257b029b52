// An unmodified koa 3 app: nothing of luo's in it.
import Koa from 'koa';

const version = process.argv[2] ?? 'v1';
const app = new Koa();
app.use(async (ctx) => {
  const m = /^\/n\/(\d+)$/.exec(ctx.path);
  ctx.body = m ? { n: Number(m[1]), v: version } : version;
});
const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'listening', port: server.address().port, v: version, pid: process.pid }));
});
