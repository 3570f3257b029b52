// The package's entry (dist/bundle/index.js, made by scripts/facades.ts: the bundle loaded
// through src/eager.ts) exports everything the library's source exports, by the same names,
// as the same kinds of values.
import assert from 'node:assert/strict';
import test from 'node:test';

test('the package entry exports what src/index.ts exports', async () => {
  const entry = (await import('luo')) as Record<string, unknown>;
  const source = (await import('../src/index.js')) as Record<string, unknown>;
  assert.deepEqual(Object.keys(entry).sort(), Object.keys(source).sort());
  for (const k of Object.keys(source)) assert.equal(typeof entry[k], typeof source[k], `${k}: ${typeof entry[k]} in the entry, ${typeof source[k]} in the source`);
  assert.equal(typeof entry.boot, 'function');
});
