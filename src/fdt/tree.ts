/*
 * fdt/tree: the in-memory device tree: nodes, properties, typed access, lookup by path.
 *
 * Lifecycle: built by hand (new FdtNode) or by decode(); mutated freely; encoded by encode().
 * Property values are raw bytes; the typed accessors read and write them big-endian, as the
 * devicetree specification says (cells are u32 BE, a u64 is two cells). A typed read of a
 * property of the wrong size raises FdtError (offset -1: the tree is not a blob); a read of a
 * missing property returns undefined, and the `require*` forms raise FdtError naming it.
 */
import { FdtError } from '../errors.js';

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: false });

export interface MemReserve { address: bigint; size: bigint }

export class FdtNode {
  readonly name: string;
  readonly props = new Map<string, Uint8Array>();
  readonly children = new Map<string, FdtNode>();

  constructor(name = '') {
    this.name = name;
  }

  // ---- structure ----

  /** Add (or replace) a child node and return it. */
  addChild(name: string): FdtNode {
    const c = new FdtNode(name);
    this.children.set(name, c);
    return c;
  }

  child(name: string): FdtNode | undefined {
    return this.children.get(name);
  }

  /** Look up a node by path: "/a/b" or "a/b" relative to this node; "/" is this node. */
  lookup(path: string): FdtNode | undefined {
    let node: FdtNode | undefined = this;
    for (const part of path.split('/')) {
      if (part === '') continue;
      node = node.children.get(part);
      if (!node) return undefined;
    }
    return node;
  }

  // ---- writers (return this, for chaining) ----

  setBytes(name: string, value: Uint8Array): this {
    this.props.set(name, value);
    return this;
  }

  setEmpty(name: string): this {
    return this.setBytes(name, new Uint8Array(0));
  }

  setU32(name: string, value: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value >>> 0);
    return this.setBytes(name, b);
  }

  setU64(name: string, value: bigint | number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(value)));
    return this.setBytes(name, b);
  }

  setCells(name: string, cells: number[]): this {
    const b = new Uint8Array(cells.length * 4);
    const dv = new DataView(b.buffer);
    for (let i = 0; i < cells.length; i++) dv.setUint32(i * 4, cells[i]! >>> 0);
    return this.setBytes(name, b);
  }

  setU64Array(name: string, values: (bigint | number)[]): this {
    const b = new Uint8Array(values.length * 8);
    const dv = new DataView(b.buffer);
    values.forEach((v, i) => dv.setBigUint64(i * 8, BigInt.asUintN(64, BigInt(v))));
    return this.setBytes(name, b);
  }

  setString(name: string, value: string): this {
    return this.setStringList(name, [value]);
  }

  setStringList(name: string, values: string[]): this {
    const parts = values.map((v) => {
      if (v.includes('\0')) throw new FdtError(-1, `string for property "${name}" contains NUL`);
      return enc.encode(v + '\0');
    });
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return this.setBytes(name, out);
  }

  // ---- readers ----

  bytes(name: string): Uint8Array | undefined {
    return this.props.get(name);
  }

  u32(name: string): number | undefined {
    const v = this.props.get(name);
    if (v === undefined) return undefined;
    if (v.length !== 4) throw new FdtError(-1, `property "${name}" is ${v.length} bytes, expected a u32`);
    return new DataView(v.buffer, v.byteOffset, 4).getUint32(0);
  }

  u64(name: string): bigint | undefined {
    const v = this.props.get(name);
    if (v === undefined) return undefined;
    if (v.length !== 8) throw new FdtError(-1, `property "${name}" is ${v.length} bytes, expected a u64`);
    return new DataView(v.buffer, v.byteOffset, 8).getBigUint64(0);
  }

  cells(name: string): number[] | undefined {
    const v = this.props.get(name);
    if (v === undefined) return undefined;
    if (v.length % 4 !== 0) throw new FdtError(-1, `property "${name}" is ${v.length} bytes, not whole cells`);
    const dv = new DataView(v.buffer, v.byteOffset, v.length);
    const out: number[] = new Array(v.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = dv.getUint32(i * 4);
    return out;
  }

  u64Array(name: string): bigint[] | undefined {
    const v = this.props.get(name);
    if (v === undefined) return undefined;
    if (v.length % 8 !== 0) throw new FdtError(-1, `property "${name}" is ${v.length} bytes, not whole u64s`);
    const dv = new DataView(v.buffer, v.byteOffset, v.length);
    return Array.from({ length: v.length / 8 }, (_, i) => dv.getBigUint64(i * 8));
  }

  stringList(name: string): string[] | undefined {
    const v = this.props.get(name);
    if (v === undefined) return undefined;
    if (v.length === 0 || v[v.length - 1] !== 0) throw new FdtError(-1, `property "${name}" is not NUL-terminated`);
    return dec.decode(v.subarray(0, v.length - 1)).split('\0');
  }

  string(name: string): string | undefined {
    const l = this.stringList(name);
    if (l === undefined) return undefined;
    if (l.length !== 1) throw new FdtError(-1, `property "${name}" holds ${l.length} strings, expected one`);
    return l[0];
  }

  /** True when the "compatible" string list contains `compat`. */
  isCompatible(compat: string): boolean {
    try {
      return this.stringList('compatible')?.includes(compat) ?? false;
    } catch {
      return false;
    }
  }

  requireU64(name: string): bigint {
    const v = this.u64(name);
    if (v === undefined) throw new FdtError(-1, `node "${this.name || '/'}" has no property "${name}"`);
    return v;
  }

  requireU32(name: string): number {
    const v = this.u32(name);
    if (v === undefined) throw new FdtError(-1, `node "${this.name || '/'}" has no property "${name}"`);
    return v;
  }

  requireString(name: string): string {
    const v = this.string(name);
    if (v === undefined) throw new FdtError(-1, `node "${this.name || '/'}" has no property "${name}"`);
    return v;
  }
}

/** A whole device tree: the root node plus the header's side data. */
export class Fdt {
  root: FdtNode;
  memReserve: MemReserve[];
  bootCpuidPhys: number;

  constructor(root = new FdtNode(''), memReserve: MemReserve[] = [], bootCpuidPhys = 0) {
    this.root = root;
    this.memReserve = memReserve;
    this.bootCpuidPhys = bootCpuidPhys;
  }

  lookup(path: string): FdtNode | undefined {
    return this.root.lookup(path);
  }
}

/** Structural equality of two nodes (names, property bytes, children, order-insensitive). */
export function nodesEqual(a: FdtNode, b: FdtNode): boolean {
  if (a.name !== b.name || a.props.size !== b.props.size || a.children.size !== b.children.size) return false;
  for (const [k, v] of a.props) {
    const w = b.props.get(k);
    if (!w || w.length !== v.length) return false;
    for (let i = 0; i < v.length; i++) if (v[i] !== w[i]) return false;
  }
  for (const [k, c] of a.children) {
    const d = b.children.get(k);
    if (!d || !nodesEqual(c, d)) return false;
  }
  return true;
}
