// A connections table v3 (src/uapi/connections.ts) names the idle connections of a server's
// baseline through a base block written before the freeze, and carries only the connections
// that moved since, plus which of the block's are not carried. Read by a next image, it gives
// every connection in order (the table's own, then the block's kept ones, fd first + i) with
// its counters and bytes, whether the block was read ahead (before the freeze) or only at
// boot; a damaged block, or a block read ahead that is not the one the table names, is never
// taken for it; and any bytes decode to a table, a block or a reason, never an exception.
import assert from 'node:assert/strict';
import test from 'node:test';
import fc from 'fast-check';
import { readAhead, readTable } from '../src/handlers/connection.js';
import type { Retrieve } from '../src/luo/file-handler.js';
import { baseBlockSize, decodeBaseBlock, decodeTable, encodeBaseBlock, encodeTable, gapsOf, nthKept, tableSize, type TableSource } from '../src/uapi/connections.js';

const PAGE = 4096;
const up = (n: number): number => Math.ceil(n / PAGE) * PAGE;

/** Handed-over memory holding regions at page-aligned addresses, and a token over it. */
function handedOver(regions: Array<{ addr: number; bytes: Uint8Array }>, tableAddr: number, fds: number[]): Retrieve & { freed: number[]; claimed: number[] } {
  const end = Math.max(...regions.map((r) => r.addr + up(r.bytes.length)));
  const mem = new Uint8Array(end);
  for (const r of regions) mem.set(r.bytes, r.addr);
  const sizes = new Map(regions.map((r) => [r.addr, up(r.bytes.length)]));
  const t = {
    token: 1n, compatible: 'server-v2', data: BigInt(tableAddr), freed: [] as number[], claimed: [] as number[],
    get fds() {
      return fds;
    },
    fd: (i: number) => fds[i]!,
    fdRange: (from: number, count: number) => Int32Array.from(fds.slice(from, from + count)),
    fdCount: fds.length,
    ready: (f: ArrayLike<number>) => new Uint8Array(f.length),
    readySince: () => null,
    previousFds: fds,
    rollback: false,
    lost: () => {},
    memory: {
      claim: (addr: number) => {
        const n = sizes.get(addr);
        if (n === undefined) throw Object.assign(new Error(`nothing preserved at ${addr}`), { code: 'ENOENT' });
        t.claimed.push(addr);
        return n;
      },
      view: (addr: number, len: number) => mem.subarray(addr, addr + len),
      free: (addr: number) => void t.freed.push(addr),
    },
  };
  return t;
}

interface Case {
  own: Array<{ flags: number; rx: number; tx: number; unread: string }>;
  base: Array<{ rx: number; tx: number }>;
  moved: number[];
}

const counter = fc.oneof(fc.nat({ max: 1000 }), fc.constantFrom(2 ** 32 - 1, 2 ** 32, 2 ** 40 + 3, 2 ** 53 - 2));
const arbCase: fc.Arbitrary<Case> = fc.record({
  own: fc.array(fc.record({ flags: fc.constantFrom(0, 1, 2, 4, 8), rx: counter, tx: counter, unread: fc.string({ maxLength: 6 }) }), { maxLength: 8 }),
  base: fc.array(fc.record({ rx: counter, tx: counter }), { maxLength: 40 }),
  picks: fc.array(fc.nat(), { maxLength: 12 }),
}).map(({ own, base, picks }) => ({ own, base, moved: [...new Set(base.length ? picks.map((p) => p % base.length) : [])].sort((a, b) => a - b) }));

/** The table (at page 1) and the block (after it) a server writes for `c`; and the block's checksum. */
function written(c: Case): { table: Uint8Array; block: Uint8Array; blockAddr: number; checksum: number } {
  const block = new Uint8Array(baseBlockSize(c.base.length));
  const checksum = encodeBaseBlock(block, c.base.map((b) => b.rx), c.base.map((b) => b.tx), c.base.length);
  const bytes = new Map<number, { unread: Uint8Array; unsent: Uint8Array }>();
  c.own.forEach((o, i) => o.unread && bytes.set(i, { unread: Buffer.from(o.unread), unsent: Buffer.alloc(0) }));
  const blockAddr = PAGE * 64;
  const src: TableSource = {
    count: c.own.length, flags: 1, first: 1, connFlags: c.own.map((o) => o.flags), rx: c.own.map((o) => o.rx), tx: c.own.map((o) => o.tx), bytes,
    base: { addr: blockAddr, count: c.base.length, checksum, moved: c.moved },
  };
  const table = new Uint8Array(tableSize(src));
  encodeTable(table, src);
  return { table, block, blockAddr, checksum };
}

/** What the next image must see, connection by connection. */
function expected(c: Case): Array<{ flags: number; rx: number; tx: number; unread: string }> {
  return [...c.own.map((o) => ({ flags: o.flags, rx: o.rx, tx: o.tx, unread: o.unread })), ...c.base.filter((_, j) => !c.moved.includes(j)).map((b) => ({ flags: 0, rx: b.rx, tx: b.tx, unread: '' }))];
}

test('a v3 table gives its own connections, then the base block\'s kept ones, each with its fd and counters, read ahead or not', () => {
  fc.assert(fc.property(arbCase, fc.boolean(), (c, ahead) => {
    const { table, block, blockAddr } = written(c);
    const want = expected(c);
    const fds = [50, ...want.map((_, i) => 100 + i)];
    const tok = handedOver([{ addr: PAGE, bytes: table }, { addr: blockAddr, bytes: block }], PAGE, fds);
    if (ahead) assert.equal(readAhead(blockAddr, block), true);
    const t = readTable(tok);
    assert.equal(t.count, want.length);
    assert.equal(t.http, true);
    for (let i = 0; i < want.length; i++) {
      const got = t.at(i);
      assert.equal(got.fd, 100 + i, `connection ${i} is fd #${i + 1} of the token`);
      assert.deepEqual({ flags: got.flags, rx: got.rx, tx: got.tx, unread: got.unread.toString() }, want[i], `connection ${i}`);
    }
    assert.deepEqual(tok.claimed.sort((a, b) => a - b), [PAGE, blockAddr], 'the table and its block are claimed');
    assert.deepEqual(tok.freed.sort((a, b) => a - b), [PAGE, blockAddr], 'and given back once read');
  }), { numRuns: 300 });
});

test('the r-th index not skipped, for any skipped set', () => {
  fc.assert(fc.property(fc.uniqueArray(fc.nat({ max: 200 }), { maxLength: 60 }), fc.nat({ max: 150 }), (skipped, r) => {
    const sorted = [...skipped].sort((a, b) => a - b);
    const kept: number[] = [];
    for (let i = 0; kept.length <= r; i++) if (!sorted.includes(i)) kept.push(i);
    assert.equal(nthKept(gapsOf(sorted), r), kept[r]);
  }), { numRuns: 500 });
});

test('a damaged base block is refused, whether it was read ahead or not', () => {
  const c: Case = { own: [{ flags: 0, rx: 1, tx: 2, unread: 'x' }], base: [{ rx: 5, tx: 6 }, { rx: 7, tx: 8 }, { rx: 9, tx: 2 ** 40 }], moved: [1] };
  const { table, block, blockAddr } = written(c);
  for (const at of [0, 9, 20, block.length - 1]) {
    const bad = Uint8Array.from(block);
    bad[at] ^= 0x10;
    assert.equal(readAhead(blockAddr, bad), false, `a damaged block (byte ${at}) is not read ahead`);
    const tok = handedOver([{ addr: PAGE, bytes: table }, { addr: blockAddr, bytes: bad }], PAGE, [50, 100, 101, 102]);
    assert.throws(() => readTable(tok), { code: 'ERR_HANDOVER', message: /base block|checksum/ }, `byte ${at}`);
  }
});

test('a block read ahead that is not the one the table names is not taken for it', () => {
  const c: Case = { own: [], base: [{ rx: 5, tx: 6 }, { rx: 7, tx: 8 }], moved: [] };
  const { table, block, blockAddr } = written(c);
  // Another baseline's block at the same address, read ahead (a stale hint): the table's
  // checksum names this one, which is read from memory at boot.
  const other = new Uint8Array(baseBlockSize(2));
  encodeBaseBlock(other, [1, 1], [1, 1], 2);
  assert.equal(readAhead(blockAddr, other), true);
  const t = readTable(handedOver([{ addr: PAGE, bytes: table }, { addr: blockAddr, bytes: block }], PAGE, [50, 100, 101]));
  assert.deepEqual([t.at(0).rx, t.at(1).rx], [5, 7]);
  // And a table naming a block that is not there at all is refused.
  assert.throws(() => readTable(handedOver([{ addr: PAGE, bytes: table }], PAGE, [50, 100, 101])), { code: 'ERR_HANDOVER', message: /no base block/ });
});

test('a v3 table whose fds the token does not carry, or whose moved list is not ascending, is refused', () => {
  const c: Case = { own: [{ flags: 0, rx: 1, tx: 2, unread: '' }], base: [{ rx: 5, tx: 6 }, { rx: 7, tx: 8 }, { rx: 9, tx: 10 }], moved: [0, 2] };
  const { table, block, blockAddr } = written(c);
  assert.throws(() => readTable(handedOver([{ addr: PAGE, bytes: table }, { addr: blockAddr, bytes: block }], PAGE, [50, 100])), { code: 'ERR_HANDOVER', message: /2 connections from fd #1, the token carries 2 fds/ });
  const swapped = Uint8Array.from(table);
  const dv = new DataView(swapped.buffer);
  const movedAt = 56 + 40;
  dv.setUint32(movedAt, 2, true);
  dv.setUint32(movedAt + 4, 0, true);
  assert.match(String(decodeTable(swapped)), /moved list is not ascending|checksum/);
});

test('fuzz: any bytes decode to a table, a base block or a reason, never an exception', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), fc.constantFrom(0, 1, 2), (bytes, kind) => {
    const mem = new Uint8Array(bytes);
    const dv = new DataView(mem.buffer);
    if (kind === 1 && mem.length >= 8) {
      dv.setUint32(0, 0x434f554c, true);
      dv.setUint32(4, 3, true);
    } else if (kind === 2 && mem.length >= 8) {
      dv.setUint32(0, 0x424f554c, true);
      dv.setUint32(4, 1, true);
    }
    const t = decodeTable(mem, { counters: true });
    assert.ok(typeof t === 'string' || t.count >= 0);
    const b = decodeBaseBlock(mem);
    assert.ok(typeof b === 'string' || b.count >= 0);
  }), { numRuns: 3000 });
});
