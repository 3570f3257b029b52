// preserveServer called before listen() has finished (not awaited) does not throw ("Server has
// no handle"): it preserves the server once it listens; a listen that fails rejects it.
import assert from 'node:assert/strict';
import test from 'node:test';
import { boot, preserveServer } from 'luo';
import http from 'node:http';
import { tmpDir } from './helpers.js';

test('preserveServer before listening waits for it; a failed listen rejects', async () => {
  const luo = boot({ name: 'early-preserve', rundir: tmpDir(), stateFile: false });
  const server = http.createServer();
  const preserved = preserveServer(luo, 7, server);
  server.listen(0, '127.0.0.1');
  await preserved;
  assert.deepEqual(luo.files.describeOutgoing().map((f) => f.compatible), ['server-v2']);
  const taken = http.createServer();
  const failing = preserveServer(luo, 8, taken);
  taken.listen((server.address() as import('node:net').AddressInfo).port, '127.0.0.1');
  await assert.rejects(failing, { code: 'EADDRINUSE' });
  server.close();
});
