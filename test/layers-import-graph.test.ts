// The layering of src/ (docs/architecture.md), read from the sources' imports, type imports
// included: no import cycle anywhere; each directory imports only the layers below it; no
// file handler reaches Luo or KHO; the handover transports are imported only by the handover
// module itself.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { distRoot } from './helpers.js';

const src = path.join(distRoot, '..', 'src');

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sources(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Each source file (relative to src/, e.g. "luo/luo.ts") → the src files it imports. */
function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const file of sources(src)) {
    const text = fs.readFileSync(file, 'utf8');
    const deps = new Set<string>();
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'(\.[^']+)'/g)) {
      const target = path.resolve(path.dirname(file), m[1]!.replace(/\.js$/, '.ts'));
      if (fs.existsSync(target)) deps.add(path.relative(src, target));
    }
    g.set(path.relative(src, file), [...deps]);
  }
  return g;
}

/** Strongly connected components with more than one file (or a file importing itself). */
function cycles(g: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of g.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (g.get(v) ?? []).includes(v)) out.push(comp.sort());
    }
  };
  for (const v of g.keys()) if (!idx.has(v)) visit(v);
  return out;
}

/** The layer of a file: its directory, or the file itself at the top of src/. */
const layer = (f: string): string => (f.includes('/') ? f.slice(0, f.indexOf('/')) : f.replace(/\.ts$/, ''));

/** What each layer may import (besides itself). */
const ALLOWED: Record<string, string[]> = {
  errors: [],
  panic: ['uapi'],
  util: [],
  config: ['errors'],
  sys: ['errors'],
  fdt: ['errors'],
  uapi: ['errors'],
  kho: ['errors', 'fdt', 'sys', 'uapi'],
  handover: ['errors', 'config', 'panic', 'sys', 'fdt', 'uapi', 'kho', 'util'],
  state: ['errors', 'uapi'],
  luo: ['errors', 'config', 'panic', 'fdt', 'sys', 'uapi', 'kho', 'handover', 'state', 'util'],
  handlers: ['errors', 'config', 'sys', 'uapi', 'luo', 'util'],
  device: ['errors', 'config', 'sys', 'uapi', 'luo', 'handover', 'util'],
  integrations: ['errors', 'config', 'sys', 'uapi', 'luo', 'handlers', 'handover'],
  cli: ['errors', 'config', 'sys', 'fdt', 'uapi', 'luo', 'device'],
  index: ['*'],
  register: ['*'],
  warm: ['*'],
  eager: [],
};

test('src/ has no import cycle (type imports included)', () => {
  assert.deepEqual(cycles(graph()), []);
});

test('each layer imports only the layers below it', () => {
  const bad: string[] = [];
  for (const [file, deps] of graph()) {
    const from = layer(file);
    const allowed = ALLOWED[from];
    assert.ok(allowed, `${file}: layer "${from}" is not in the table (docs/architecture.md)`);
    for (const d of deps) {
      const to = layer(d);
      if (to !== from && !allowed.includes('*') && !allowed.includes(to)) bad.push(`${file} → ${d}`);
    }
  }
  assert.deepEqual(bad, []);
});

test('no file handler reaches Luo, the files layer or KHO: only the narrow context of luo/file-handler.ts', () => {
  const reach = [...graph()].filter(([f]) => f.startsWith('handlers/')).flatMap(([f, deps]) => deps.filter((d) => d.startsWith('luo/') && !['luo/file-handler.ts', 'luo/callbacks.ts'].includes(d)).map((d) => `${f} → ${d}`));
  assert.deepEqual(reach, []);
  for (const file of sources(path.join(src, 'handlers'))) {
    const code = fs.readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
    assert.doesNotMatch(code, /\bluo\.kho\b|\bLuo\b/, `${path.relative(src, file)} names Luo or luo.kho`);
  }
});

test('the handover transports are imported only inside the handover module (Luo.reboot goes through its interface)', () => {
  const transports = ['handover/exec.ts', 'handover/successor.ts'];
  const users = [...graph()].filter(([f, deps]) => !f.startsWith('handover/') && deps.some((d) => transports.includes(d))).map(([f]) => f);
  assert.deepEqual(users, []);
  // The rest of the core may name the handover's types (an fd's key, what arrived), no more.
  for (const file of sources(path.join(src, 'luo')).filter((f) => !f.endsWith('luo.ts'))) {
    const text = fs.readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^import(.*)from '\.\.\/handover\/[^']+';/gm)) {
      assert.match(m[1]!, /^ type /, `${path.relative(src, file)} imports the handover module for more than its types`);
    }
  }
});
