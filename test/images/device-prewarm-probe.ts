/*
 * Device.prewarm and awaitPrewarm, as a successor uses them: start the control device's
 * worker early, wait (blocking, without the event loop) until it has loaded, then boot and
 * serve the device on that same worker. Prints {started, waitedMs, path} and keeps serving.
 */
import { boot, startDevice } from 'luo';
import { Device } from '../../src/device/server.js';

Device.prewarm();
const t0 = performance.now();
const started = Device.awaitPrewarm(10_000);
const waitedMs = performance.now() - t0;
const luo = boot({ name: 'prewarm-probe' });
const dev = startDevice(luo);
process.stdout.write(JSON.stringify({ started, waitedMs, path: dev.path }) + '\n');
setInterval(() => {}, 1000);
