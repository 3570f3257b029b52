// The KHO debug view (CONFIG_KEXEC_HANDOVER_DEBUG): off by default; when on, the outgoing and
// incoming root trees and every subtree are written as DTB files under debug/{out,in}/.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { decode } from '../src/fdt/index.js';
import { imagePath, runNode, tmpDir } from './helpers.js';

test('with the debug view on, out/ and in/ hold the root and sub_fdts as valid DTBs', async () => {
  const dir = tmpDir('luo-debug-');
  const r = await runNode(imagePath('kho-a'), [], { env: { ...process.env, KHO_TEST_DEBUG: dir } });
  assert.equal(r.code, 0, r.stderr);
  for (const side of ['out', 'in']) {
    const root = decode(new Uint8Array(fs.readFileSync(path.join(dir, side, 'fdt'))));
    assert.equal(root.root.string('compatible'), 'kho-v1');
    assert.deepEqual([...root.root.children.keys()].sort(), ['one', 'two']);
    assert.deepEqual(fs.readdirSync(path.join(dir, side, 'sub_fdts')).sort(), ['one', 'two']);
    const two = decode(new Uint8Array(fs.readFileSync(path.join(dir, side, 'sub_fdts', 'two'))));
    assert.equal(two.lookup('/child@1')!.u32('value'), 0xdeadbeef);
  }
});

test('the debug view is off by default: nothing is written', async () => {
  const dir = tmpDir('luo-nodebug-');
  const r = await runNode(imagePath('kho-a'), [], { env: { ...process.env, LUO_RUNDIR: dir } });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(fs.readdirSync(dir), []);
});
