/*
 * Example: a TCP echo service that can be updated live.
 *
 *   npm run example:echo -- --port 7000 --name echo [--rundir DIR]
 *   luo update --name echo          # in another shell: replace the running code, keep clients
 *
 * On a cold start it listens on the port; after a live update it adopts the same listening
 * socket and every connection (bytes in flight included), then starts its control device so
 * the agent can FINISH. The version line it prints shows which code is running.
 */
import net from 'node:net';
import { boot, preserveServer, restoreServer, startDevice, State } from 'luo';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const port = Number(opt('port') ?? '7000');
const name = opt('name') ?? 'echo';
const rundir = opt('rundir');
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: npm run example:echo -- --port PORT --name NAME [--rundir DIR]');
  process.exit(2);
}

const luo = boot({ name, ...(rundir ? { rundir } : {}) });
const server = net.createServer((s) => {
  s.on('error', () => {});
  s.pipe(s);
});
if (luo.state === State.UPDATED) {
  const r = await restoreServer(luo, 1, server);
  console.log(`echo: live update #${luo.liveupdateNumber} (pid ${process.pid}): ${r.connections} connections carried over, ${r.unread + r.unsent} bytes in flight kept`);
} else {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  console.log(`echo: listening on 127.0.0.1:${(server.address() as net.AddressInfo).port} (pid ${process.pid}); update with: luo update --rundir ${luo.config.rundir}`);
}
preserveServer(luo, 1, server);
startDevice(luo);
