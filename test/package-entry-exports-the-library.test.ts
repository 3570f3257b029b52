// The package's entry (dist/bundle/index.js, made by scripts/facades.ts: the bundle loaded
// through src/eager.ts) exports everything the library's source exports, by the same names,
// as the same kinds of values; and require() gets the same module (the entry has no
// top-level await).
import assert from 'node:assert/strict';
import test from 'node:test';

test('the package entry exports what src/index.ts exports', async () => {
  const entry = (await import('luo')) as Record<string, unknown>;
  const source = (await import('../src/index.js')) as Record<string, unknown>;
  assert.deepEqual(Object.keys(entry).sort(), Object.keys(source).sort());
  for (const k of Object.keys(source)) assert.equal(typeof entry[k], typeof source[k], `${k}: ${typeof entry[k]} in the entry, ${typeof source[k]} in the source`);
  assert.equal(typeof entry.boot, 'function');
});

test('a CommonJS service can require() the package entry', async () => {
  const { createRequire } = await import('node:module');
  const req = createRequire(import.meta.url);
  const l = req('luo') as Record<string, unknown>;
  assert.equal(typeof l.boot, 'function');
  assert.equal(l.boot, ((await import('luo')) as Record<string, unknown>).boot, 'the same module as import()');
});
