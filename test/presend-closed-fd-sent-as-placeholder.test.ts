// An fd closed between the moment a handler named it for the early send and the moment its
// datagram went (a connection that closed while the running image served between slices of
// the presend) does not fail the update: it goes as a placeholder, and since its key is gone
// by the freeze, the handover drops that copy like any early copy not carried after all.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import test from 'node:test';
import { files, ino, peer } from './peer.js';

test('an fd closed before its early datagram went is sent as a placeholder and dropped at the handover', { timeout: 30_000 }, async () => {
  const f = files(4);
  const k = f.map(() => ({}));
  const refs = f.map((fd, i) => ({ fd, key: k[i]!, stream: true }));
  const { next, report } = peer('v2');
  try {
    await next.ready(10_000);
    fs.closeSync(f[2]!); // named, then closed before the presend sent it
    await next.presend(refs, { arenaFd: f[0]!, regions: [] }, 10_000);
    // At the freeze f2's connection is gone: the handover names the others only.
    next.handover(`kho-v1:${f[0]}:0x1000:64`, [refs[0]!, refs[1]!, refs[3]!], 10_000);
    const r = await report();
    assert.equal(r.early, 4, 'the successor held four early fds, the placeholder among them');
    assert.deepEqual(r.map, [f[0], f[1], f[3]].map((fd) => [fd!, ino(fd!)]).sort((a, b) => a[0]! - b[0]!), 'it maps exactly the live fds, to the same files');
    assert.equal(r.closedEarly, 1, 'the placeholder is dropped');
    assert.equal(r.closedEarlyStillOpen, 0);
  } finally {
    next.abort();
    for (const [i, fd] of f.entries()) if (i !== 2) fs.closeSync(fd);
  }
});
