// The connections table between images (src/uapi/connections.ts): v2 round-trips, names its
// connections' fds by index in the token's list and refuses a damaged table by its checksum;
// a v1 table (luo 0.1, fds by the previous image's numbers) is still read; any bytes at all
// decode to a table or a reason, never an exception.
import assert from 'node:assert/strict';
import test from 'node:test';
import fc from 'fast-check';
import { readTable } from '../src/handlers/connection.js';
import type { Retrieve } from '../src/luo/file-handler.js';
import { ENTRY_V2, TABLE_HEADER, copyWithout, decodeTable, encodeEntries, encodeTable, tableSize, type TableSource } from '../src/uapi/connections.js';

function source(): TableSource {
  const bytes = new Map([[1, { unread: Buffer.from('GET / HTTP/1.1\r\n'), unsent: Buffer.from('HTTP/1.1 200 OK\r\n') }]]);
  return { count: 3, flags: 1, first: 1, connFlags: [0, 1, 3], rx: [0, 120, 2 ** 40 + 7], tx: [5, 0, 99], bytes };
}

/** A handed-over token as the files layer gives it to retrieve, over a plain buffer. */
function token(mem: Uint8Array, data: number, previousFds: number[], mine: number[]): Retrieve & { freed: boolean } {
  const r = {
    token: 1n, compatible: 'server-v2', data: BigInt(data), freed: false,
    get fds() {
      return mine;
    },
    fd: (i: number) => mine[i]!,
    fdRange: (from: number, count: number) => Int32Array.from(mine.slice(from, from + count)),
    fdCount: mine.length,
    ready: (fds: ArrayLike<number>) => new Uint8Array(fds.length),
    readySince: () => null,
    previousFds,
    rollback: false,
    lost: () => {},
    memory: {
      claim: (addr: number) => (addr === data ? mem.length - addr : 0),
      view: (addr: number, len: number) => mem.subarray(addr, addr + len),
      free: () => void (r.freed = true),
    },
  };
  return r;
}

test('a v2 table round-trips: flags, counters and carried bytes; connection i is fd first + i of the token', () => {
  const src = source();
  const mem = new Uint8Array(64 + tableSize(src));
  encodeTable(mem.subarray(64), src);
  const t = decodeTable(mem.subarray(64), { counters: true });
  assert.ok(typeof t !== 'string', String(t));
  assert.deepEqual([...t.connFlags], [0, 1, 3]);
  assert.deepEqual([...t.rx!], [0, 120, 2 ** 40 + 7]);
  assert.deepEqual([...t.tx!], [5, 0, 99]);
  assert.equal((decodeTable(mem.subarray(64)) as { rx: unknown }).rx, null, 'counters are read only when asked for');
  assert.equal(t.bytes.get(1)!.unread.toString(), 'GET / HTTP/1.1\r\n');
  assert.equal(t.bytes.get(1)!.unsent.toString(), 'HTTP/1.1 200 OK\r\n');
  assert.equal(t.bytes.has(0), false);
  const tok = token(mem, 64, [10, 11, 12, 13], [40, 41, 42, 43]);
  const carried = readTable(tok);
  assert.deepEqual([...carried.fds], [41, 42, 43], 'fds #1-#3 of the token, in this process\'s numbers');
  assert.equal(carried.http, true);
  assert.equal(tok.freed, true, 'the table\'s memory is given back once read');
});

test('one flipped byte anywhere in a v2 table is refused by its checksum', () => {
  const src = source();
  const size = tableSize(src);
  for (const at of [9, 20, TABLE_HEADER + 3, TABLE_HEADER + ENTRY_V2 + 25, size - 1]) {
    const mem = new Uint8Array(size);
    encodeTable(mem, src);
    mem[at]! ^= 0x10;
    const t = decodeTable(mem);
    assert.equal(typeof t, 'string', `byte ${at}`);
  }
  const mem = new Uint8Array(size);
  encodeTable(mem, src);
  mem[size - 1]! ^= 1;
  assert.throws(() => readTable(token(mem, 0, [1, 2, 3, 4], [1, 2, 3, 4])), { code: 'ERR_HANDOVER', message: /checksum/ });
});

test('a v1 table (fds by the previous image\'s numbers) is read through the token\'s list', () => {
  // header: magic, version 1, count 2, flags 0, size, listener fd 7; entries of 24 bytes.
  const size = 32 + 2 * 24 + 3;
  const mem = new Uint8Array(size);
  const dv = new DataView(mem.buffer);
  dv.setUint32(0, 0x434f554c, true);
  dv.setUint32(4, 1, true);
  dv.setUint32(8, 2, true);
  dv.setUint32(16, size, true);
  dv.setUint32(24, 7, true);
  dv.setUint32(32, 30, true); // connection 0: fd 30
  dv.setUint32(56, 20, true); // connection 1: fd 20, 3 unread bytes at 80
  dv.setUint32(60, 1, true);
  dv.setUint32(64, 3, true);
  dv.setUint32(72, 80, true);
  mem.set(Buffer.from('abc'), 80);
  const carried = readTable(token(mem, 0, [7, 20, 30], [100, 101, 102]));
  assert.deepEqual([...carried.fds], [102, 101]);
  assert.deepEqual([carried.at(0).flags, carried.at(1).flags], [0, 1]);
  assert.equal(carried.at(1).unread.toString(), 'abc');
  assert.throws(() => readTable(token(mem, 0, [7, 20], [100, 101])), { code: 'ERR_HANDOVER', message: /fd 30, which the token does not carry/ });
});

test('fuzz: any bytes decode to a table or a reason, never an exception', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), fc.boolean(), (bytes, magic) => {
    const mem = new Uint8Array(bytes);
    if (magic && mem.length >= 8) {
      new DataView(mem.buffer).setUint32(0, 0x434f554c, true);
      mem[4] = 1 + (mem[5]! & 1);
      mem[5] = mem[6] = mem[7] = 0;
    }
    const t = decodeTable(mem);
    assert.ok(typeof t === 'string' || t.count >= 0);
  }), { numRuns: 3000 });
});

test('a v2 table with its idle entries encoded in advance (a baseline) reads as if encoded at once, those entries last', () => {
  const quiet = encodeEntries([0, 0, 0], [10, 2 ** 35, 7], [11, 12, 2 ** 40], 3);
  const bytes = new Map([[0, { unread: Buffer.from('abc'), unsent: Buffer.alloc(0) }]]);
  const src = { count: 5, flags: 0, first: 1, connFlags: [1, 0], rx: [5, 6], tx: [7, 8], bytes, encoded: quiet };
  const mem = new Uint8Array(tableSize(src));
  encodeTable(mem, src);
  const t = decodeTable(mem, { counters: true });
  assert.ok(typeof t !== 'string', String(t));
  assert.equal(t.count, 5);
  assert.deepEqual([...t.connFlags], [1, 0, 0, 0, 0]);
  assert.deepEqual([...t.rx!], [5, 6, 10, 2 ** 35, 7]);
  assert.deepEqual([...t.tx!], [7, 8, 11, 12, 2 ** 40]);
  assert.equal(t.bytes.get(0)!.unread.toString(), 'abc');
  assert.deepEqual([...t.bytes.keys()], [0]);
});

test('a baseline\'s entries that moved since are left out of the table (skip), the others copied in order', () => {
  const quiet = encodeEntries([0, 0, 0, 0, 0], [10, 11, 12, 13, 2 ** 35], [20, 21, 22, 23, 24], 5);
  const src = { count: 4, flags: 0, first: 1, connFlags: [1], rx: [5], tx: [7], bytes: new Map(), encoded: quiet, skip: [0, 2] };
  const mem = new Uint8Array(tableSize(src));
  encodeTable(mem, src);
  const t = decodeTable(mem, { counters: true });
  assert.ok(typeof t !== 'string', String(t));
  assert.equal(t.count, 4);
  assert.deepEqual([...t.rx!], [5, 11, 13, 2 ** 35]);
  assert.deepEqual([...t.tx!], [7, 21, 23, 24]);
});

test('copyWithout copies every entry but the skipped ones, whatever they are', () => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 4 }), fc.array(fc.integer({ min: 0, max: 1000 }), { maxLength: 60 }), fc.array(fc.nat(), { maxLength: 20 }), (per, values, picks) => {
    const n = Math.floor(values.length / per);
    const src = Uint32Array.from(values.slice(0, n * per));
    const sorted = [...new Set(picks.filter(() => n > 0).map((p) => p % n))].sort((a, b) => a - b);
    const dst = new Uint32Array(3 + src.length);
    const wrote = copyWithout(src, per, sorted, dst, 3);
    const want: number[] = [];
    for (let i = 0; i < n; i++) if (!sorted.includes(i)) want.push(...src.subarray(per * i, per * (i + 1)));
    assert.equal(wrote, want.length);
    assert.deepEqual([...dst.subarray(3, 3 + wrote)], want);
  }));
});
