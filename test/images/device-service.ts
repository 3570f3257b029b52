/*
 * A service with its control device, for the protocol tests. Prints {"ready": true, ...} once
 * the device serves. Env: DEVICE_ALLOW_UIDS (comma list). Registers a handler "probe-v1" that
 * accepts nothing (so the protocol tests can see handler errors), and keeps the selftest hooks
 * on. On SIGUSR1 it prints its state and preserved tokens as JSON.
 */
import { boot, startDevice } from 'luo';

const luo = boot({ arenaSize: 2 ** 28, selftests: true });
const allowUids = (process.env.DEVICE_ALLOW_UIDS ?? '').split(',').filter(Boolean).map(Number);
const dev = startDevice(luo, { allowUids });
process.on('SIGUSR1', () => {
  process.stdout.write(JSON.stringify({ state: luo.stateName, tokens: luo.files.outgoingTokens.map(String), denied: dev.denied.length }) + '\n');
});
process.stdout.write(JSON.stringify({ ready: true, pid: process.pid, path: dev.path, state: luo.stateName, number: luo.liveupdateNumber }) + '\n');
setInterval(() => {}, 1 << 30);
