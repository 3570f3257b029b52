// The example's background checksum scan takes no CPU while an update is being prepared: the
// service closes its gate at PREPARE (reopens it at CANCEL), the scan waits between slices,
// then finishes exactly, writes made meanwhile accounted for. Slices last about a millisecond.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Gate, KvStore, heapMaps, seed } from '../examples/kv/store.js';

test('the checksum scan waits while its gate is closed, then finishes exactly', async () => {
  const store = KvStore.open(heapMaps(), 1, KvStore.capacityFor(64 * 2 ** 20));
  seed(store, 200_000);
  const gate = new Gate();
  const turns: number[] = [];
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    turns.push(now - last);
    last = now;
  }, 0).unref();
  const done = store.verify(4096, 0, gate);
  let finished = false;
  void done.then(() => (finished = true));
  await new Promise((r) => setTimeout(r, 5));
  gate.close();
  await new Promise((r) => setTimeout(r, 5)); // a slice in progress ends
  const cursorWhenClosed = JSON.stringify(await Promise.race([done, new Promise((r) => setTimeout(() => r('waiting'), 200))]));
  assert.equal(cursorWhenClosed, '"waiting"', 'no progress to the end while closed');
  assert.equal(finished, false);
  store.put(Buffer.from('written while it waits'), Buffer.from('x'));
  gate.reopen();
  const v = await done;
  clearInterval(ticker);
  assert.equal(v.ok, true, `${v.computed} vs ${v.expected}`);
  assert.ok(Math.max(...turns) < 50, `the loop kept turning (longest turn ${Math.max(...turns).toFixed(1)} ms)`);
});
