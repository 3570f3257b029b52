// `luo dump FILE.dtb` prints DTS that dtc accepts; on a broken blob it exits non-zero with a
// one-line error and no stack trace.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { FdtNode, decode, encode, nodesEqual } from '../src/fdt/index.js';
import { cliPath, hasTool, runNode, tmpDir } from './helpers.js';

const dir = tmpDir('luo-dump-');
const tree = new FdtNode('');
tree.setString('compatible', 'kho-v1').addChild('LUO').setU64('fdt', 0x2000);

test('luo dump prints a DTB as DTS, and dtc compiles it back to the same tree', async () => {
  const file = path.join(dir, 'good.dtb');
  fs.writeFileSync(file, encode(tree));
  const r = await runNode(cliPath, ['dump', file]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^\/dts-v1\/;/);
  assert.match(r.stdout, /compatible = "kho-v1";/);
  assert.match(r.stdout, /LUO \{\n\t\tfdt = <0x00000000 0x00002000>;/);
  if (hasTool('dtc')) {
    const back = decode(new Uint8Array(execFileSync('dtc', ['-q', '-I', 'dts', '-O', 'dtb', '-'], { input: r.stdout })));
    assert.ok(nodesEqual(back.root, tree));
  }
});

test('luo dump on a broken blob exits 3 with one line naming the offset', async () => {
  const file = path.join(dir, 'bad.dtb');
  const b = encode(tree);
  b[0] = 0;
  fs.writeFileSync(file, b);
  const r = await runNode(cliPath, ['dump', file]);
  assert.equal(r.code, 3);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, 'luo: ERR_FDT: at offset 0: bad magic 0xdfeed (expected 0xd00dfeed)\n');
});

test('luo dump on a missing file exits 1 with one line', async () => {
  const r = await runNode(cliPath, ['dump', path.join(dir, 'nope.dtb')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^luo: ENOENT: cannot read .*nope\.dtb\n$/);
});

test('luo with an unknown command exits 2 with usage', async () => {
  const r = await runNode(cliPath, ['frobnicate']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown command "frobnicate"/);
});
