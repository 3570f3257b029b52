/*
 * fdt/dts: print a tree as DTS source that dtc accepts and compiles back to the same tree.
 *
 * Each property value is printed the way dtc itself would choose: a list of strings when every
 * byte is printable and the value is a run of non-empty NUL-terminated strings, cells <...>
 * when its length is a multiple of 4, bytes [..] otherwise, and a bare name when empty.
 * Names that DTS cannot spell (characters outside dtc's name alphabet) raise LuoError
 * ERR_DTS naming the node or property: there is no source form to print for them.
 */
import { LuoError } from '../errors.js';
import type { Fdt, FdtNode } from './tree.js';

const NODE_NAME = /^[A-Za-z0-9,._+\-]+(@[A-Za-z0-9,._+\-]*)?$/;
const PROP_NAME = /^[A-Za-z0-9,._+*#?\-]+$/;

function isStringList(v: Uint8Array): boolean {
  if (v.length === 0 || v[v.length - 1] !== 0) return false;
  let prevNul = true; // an empty string (NUL right after NUL, or at the start) is not printable
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (c === 0) {
      if (prevNul) return false;
      prevNul = true;
    } else {
      if (c < 0x20 || c > 0x7e) return false;
      prevNul = false;
    }
  }
  return true;
}

function quote(s: string): string {
  return '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
}

function value(v: Uint8Array): string {
  if (v.length === 0) return '';
  if (isStringList(v)) {
    const parts = Buffer.from(v.subarray(0, v.length - 1)).toString('latin1').split('\0');
    return ' = ' + parts.map(quote).join(', ');
  }
  if (v.length % 4 === 0) {
    const dv = new DataView(v.buffer, v.byteOffset, v.length);
    const cells: string[] = [];
    for (let i = 0; i < v.length; i += 4) cells.push('0x' + dv.getUint32(i).toString(16).padStart(8, '0'));
    return ' = <' + cells.join(' ') + '>';
  }
  return ' = [' + Array.from(v, (b) => b.toString(16).padStart(2, '0')).join(' ') + ']';
}

function printNode(n: FdtNode, depth: number, path: string, out: string[]): void {
  const ind = '\t'.repeat(depth);
  const label = depth === 0 ? '/' : n.name;
  if (depth > 0 && !NODE_NAME.test(n.name)) {
    throw new LuoError('ERR_DTS', `node ${path} has a name DTS cannot spell: ${JSON.stringify(n.name)}`);
  }
  out.push(`${ind}${label} {`);
  for (const [k, v] of n.props) {
    if (!PROP_NAME.test(k)) throw new LuoError('ERR_DTS', `property ${JSON.stringify(k)} of ${path} has a name DTS cannot spell`);
    out.push(`${ind}\t${k}${value(v)};`);
  }
  for (const c of n.children.values()) printNode(c, depth + 1, path === '/' ? `/${c.name}` : `${path}/${c.name}`, out);
  out.push(`${ind}};`);
}

export function toDts(fdt: Fdt): string {
  const out = ['/dts-v1/;', ''];
  for (const r of fdt.memReserve) out.push(`/memreserve/ 0x${r.address.toString(16)} 0x${r.size.toString(16)};`);
  if (fdt.memReserve.length) out.push('');
  printNode(fdt.root, 0, '/', out);
  return out.join('\n') + '\n';
}
