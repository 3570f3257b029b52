/*
 * The package's entries, made after esbuild bundled the library (npm run build): each entry
 * (index, register, guard) is a few lines that load its bundle (core.js, register-core.js,
 * guard-core.js) through src/eager.ts's loadEagerly() (synchronously: no top-level await, so
 * a CommonJS service can still require('luo')), and re-export what it exports, by name, as
 * esbuild's metafile lists them. A bundle that is missing, or a metafile without it, fails
 * the build with the reason. The metafile is removed afterwards.
 * Usage: node dist/scripts/facades.js <dist/bundle> (the metafile is <dist/bundle>/meta.json).
 */
import fs from 'node:fs';
import path from 'node:path';

const dir = path.resolve(process.argv[2] ?? 'dist/bundle');
const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8')) as { outputs: Record<string, { exports?: string[] }> };
const ENTRIES: Array<[entry: string, bundle: string]> = [['index.js', 'core.js'], ['register.js', 'register-core.js'], ['guard.js', 'guard-core.js']];

for (const [entry, bundle] of ENTRIES) {
  const out = Object.entries(meta.outputs).find(([k]) => path.resolve(k) === path.join(dir, bundle));
  if (!out) throw new Error(`facades: ${bundle} is not among esbuild's outputs in ${dir}/meta.json`);
  const names = out[1].exports ?? [];
  const named = names.filter((n) => n !== 'default');
  const lines = [
    `// The package's entry ${entry}: ${bundle}, compiled eagerly (src/eager.ts). Made by scripts/facades.ts.`,
    "import { loadEagerly } from './eager.js';",
    `const m = loadEagerly(import.meta.url, './${bundle}');`,
    ...(named.length ? [`export const { ${named.join(', ')} } = m;`] : []),
    ...(names.includes('default') ? ['export default m.default;'] : []),
    '',
  ];
  fs.writeFileSync(path.join(dir, entry), lines.join('\n'));
}
// The metafile was only for this (it is not part of the package).
fs.rmSync(path.join(dir, 'meta.json'));
