// A corrupt or incompatible handover is a fatal boot error naming what is wrong (the kernel
// panics), unless the image asked to boot cold.
import assert from 'node:assert/strict';
import test from 'node:test';
import { EXIT_PANIC } from '../src/handover/kho.js';
import { imagePath, jsonLines, runNode } from './helpers.js';

const cases: Array<[string, RegExp]> = [
  ['root', /luo: fatal: ERR_HANDOVER: root tree is corrupt: ERR_FDT: at offset 0: bad magic/],
  ['truncate', /luo: fatal: ERR_HANDOVER: root tree is corrupt: ERR_FDT: at offset 4: totalsize/],
  ['subtree', /luo: fatal: ERR_HANDOVER: root tree: subtree "one" is not a valid FDT/],
  ['compat', /luo: fatal: ERR_HANDOVER: root tree: compatible is \["kho-v9"\], expected "kho-v1"/],
];

for (const [damage, message] of cases) {
  test(`a handover with a damaged ${damage} is fatal at boot, with the reason`, async () => {
    const r = await runNode(imagePath('kho-a'), [], { env: { ...process.env, KHO_TEST_CORRUPT: damage } });
    assert.equal(r.code, EXIT_PANIC, r.stderr);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line, no stack trace');
    assert.equal(jsonLines(r.stdout).length, 1, 'image B printed nothing');
  });
}

test('with onCorrupt=cold a damaged handover boots cold instead', async () => {
  const r = await runNode(imagePath('kho-a'), [], { env: { ...process.env, KHO_TEST_CORRUPT: 'root', LUO_ON_CORRUPT: 'cold' } });
  assert.equal(r.code, 0, r.stderr);
  const b = jsonLines(r.stdout)[1]!;
  assert.equal(b.bootedFrom, 'cold');
  assert.match(r.stderr, /booting cold: ERR_HANDOVER/);
});

for (const [entry, message] of [
  ['garbage', /is not "kho-v1:<fd>:<root address>:<root size>"/],
  ['kho-v2:3:0x1000:100', /is for "kho-v2", this image understands "kho-v1"/],
  ['kho-v1:1:0x1000:100', /the arena fd 1 named in LUO_HANDOVER is unusable/],
  ['kho-v1:99:0x1000:100', /the arena fd 99 named in LUO_HANDOVER is unusable: EBADF/],
] as const) {
  test(`LUO_HANDOVER=${entry} is refused at boot`, async () => {
    const r = await runNode(imagePath('kho-b'), [], { env: { ...process.env, LUO_HANDOVER: entry } });
    assert.equal(r.code, EXIT_PANIC);
    assert.match(r.stderr, message);
  });
}
