// A datagram longer than 64 KiB on a SOCK_SEQPACKET link: read with grow it arrives whole, with
// its fds; without, it is cut and says so. A successor's presend header names every fd it
// sends (114 KiB of JSON at 19 000 connections): cut, the handover failed.
import assert from 'node:assert/strict';
import test from 'node:test';
import * as sys from '../src/sys/index.js';

test('a 150 KiB datagram and its fds arrive whole with grow, cut without', () => {
  const [a, b] = sys.seqpacketPair();
  const fds = [sys.memfdCreate('one'), sys.memfdCreate('two'), sys.memfdCreate('three')];
  try {
    const big = Buffer.alloc(150 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = i % 251;
    sys.sendPacket(a, big, fds);
    const p = sys.recvPacket(b, 65536, { grow: true })!;
    assert.equal(p.truncated, false);
    assert.equal(p.data.length, big.length);
    assert.ok(p.data.equals(big), 'every byte');
    assert.equal(p.fds.length, 3);
    for (const fd of p.fds) sys.close(fd);

    sys.sendPacket(a, big);
    const cut = sys.recvPacket(b)!;
    assert.equal(cut.truncated, true, 'a fixed buffer cuts it, and says so');
    assert.equal(cut.data.length, 65536);
  } finally {
    for (const fd of [a, b, ...fds]) sys.close(fd);
  }
});
