// The package's entry compiles luo's code as it loads (src/eager.ts), and the service's own
// code, loaded after it, lazily again: measured by V8's bytecode statistics
// (v8.getHeapCodeStatistics), in a process that loads luo and then a module of 2 000
// functions it never calls, with LUO_EAGER=0 and without.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import test from 'node:test';

const CHILD = `
const v8 = await import('node:v8');
const bytecode = () => v8.getHeapCodeStatistics().bytecode_and_metadata_size;
const t0 = bytecode();
await import('luo');
const t1 = bytecode();
const src = Array.from({ length: 2000 }, (_, i) => 'export function f' + i + '(a) { return a * ' + i + ' + Math.sqrt(a) - ' + i + '; }').join('\\n');
await import('data:text/javascript,' + encodeURIComponent(src));
console.log(JSON.stringify({ library: t1 - t0, service: bytecode() - t1 }));
`;

function measure(env: Record<string, string>): { library: number; service: number } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', CHILD], { encoding: 'utf8', cwd: new URL('../..', import.meta.url), env: { ...process.env, ...env } });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim()) as { library: number; service: number };
}

test('luo is compiled as it loads; the service after it, lazily', () => {
  const eager = measure({});
  const lazy = measure({ LUO_EAGER: '0' });
  // luo's functions compiled at load: several times the bytecode of a lazy load.
  assert.ok(eager.library > 2 * lazy.library, `luo's bytecode at load: ${eager.library} eager, ${lazy.library} lazy`);
  // The service's 2 000 uncalled functions: not compiled in either (lazy again after luo;
  // compiled, they are ~350 KB of bytecode).
  assert.ok(eager.service < 2 * lazy.service + 32768, `the service's bytecode: ${eager.service} after an eager luo, ${lazy.service} after a lazy one`);
});
