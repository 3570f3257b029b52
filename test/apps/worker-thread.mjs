// The worker of worker-app.mjs: it says it is up.
import { parentPort } from 'node:worker_threads';

parentPort.postMessage('up');
