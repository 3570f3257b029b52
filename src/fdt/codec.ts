/*
 * fdt/codec: encode and decode flattened device trees (DTB), format version 17.
 *
 * Layout written (the same as dtc): 40-byte header, memory reservation block at 0x28,
 * structure block, strings block (property names shared), all offsets 8/4-aligned.
 *
 * Decoding is strict and total. Lifecycle of a decode: validate the header against the blob
 * → walk the reservation block → walk the structure block once, token by token, with an
 * explicit depth counter (no recursion) → return an Fdt that owns a private copy of the blob's
 * bytes (so it never aliases memory that may be released later). Any defect raises FdtError
 * naming the offset: bad magic or version, a block or property outside the blob, misaligned
 * blocks, unterminated names or strings, a name offset outside the strings block, broken
 * nesting (END_NODE without BEGIN_NODE, END inside a node, content after the root), a
 * property after a subnode, duplicate names, depth beyond MAX_DEPTH. Nothing else is thrown,
 * every loop advances through the blob (so nothing hangs), and memory stays within a small
 * multiple of the input size.
 */
import { FdtError } from '../errors.js';
import { Fdt, FdtNode, type MemReserve } from './tree.js';

export const FDT_MAGIC = 0xd00dfeed;
export const FDT_VERSION = 17;
export const FDT_LAST_COMP_VERSION = 16;
const HEADER_SIZE = 40;
const FDT_BEGIN_NODE = 1;
const FDT_END_NODE = 2;
const FDT_PROP = 3;
const FDT_NOP = 4;
const FDT_END = 9;
/** Deepest nesting accepted when decoding (libfdt's FDT_MAX_DEPTH). */
export const MAX_DEPTH = 64;

const utf8 = new TextEncoder();
const utf8d = new TextDecoder('utf-8', { fatal: false });

const align = (n: number, a: number): number => (n + a - 1) & ~(a - 1);

// ------------------------------------------------------------------------------------------
// encode

/** Encode a tree (or a bare root node) as a version-17 DTB. */
export function encode(tree: Fdt | FdtNode): Uint8Array {
  const fdt = tree instanceof Fdt ? tree : new Fdt(tree);
  if (fdt.root.name !== '') throw new FdtError(-1, `the root node must have an empty name, not "${fdt.root.name}"`);

  // Strings block: each property name once.
  const strOff = new Map<string, number>();
  const strParts: Uint8Array[] = [];
  let strLen = 0;
  const nameOffset = (name: string): number => {
    let o = strOff.get(name);
    if (o === undefined) {
      const b = utf8.encode(name + '\0');
      o = strLen;
      strOff.set(name, o);
      strParts.push(b);
      strLen += b.length;
    }
    return o;
  };

  // Size the structure block first, then fill it.
  let structLen = 4; // FDT_END
  const sizeNode = (n: FdtNode): void => {
    structLen += 4 + align(utf8.encode(n.name).length + 1, 4) + 4;
    for (const [k, v] of n.props) {
      nameOffset(k);
      structLen += 12 + align(v.length, 4);
    }
    for (const c of n.children.values()) sizeNode(c);
  };
  sizeNode(fdt.root);

  const rsvOff = HEADER_SIZE;
  const rsvLen = (fdt.memReserve.length + 1) * 16;
  const structOff = rsvOff + rsvLen;
  const stringsOff = structOff + structLen;
  const total = stringsOff + strLen;
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);

  dv.setUint32(0, FDT_MAGIC);
  dv.setUint32(4, total);
  dv.setUint32(8, structOff);
  dv.setUint32(12, stringsOff);
  dv.setUint32(16, rsvOff);
  dv.setUint32(20, FDT_VERSION);
  dv.setUint32(24, FDT_LAST_COMP_VERSION);
  dv.setUint32(28, fdt.bootCpuidPhys >>> 0);
  dv.setUint32(32, strLen);
  dv.setUint32(36, structLen);

  let o = rsvOff;
  for (const r of fdt.memReserve) {
    dv.setBigUint64(o, r.address);
    dv.setBigUint64(o + 8, r.size);
    o += 16;
  }
  o += 16; // terminator (zeros)

  const writeNode = (n: FdtNode): void => {
    dv.setUint32(o, FDT_BEGIN_NODE);
    o += 4;
    const nb = utf8.encode(n.name);
    if (nb.includes(0)) throw new FdtError(-1, `node name "${n.name}" contains NUL`);
    out.set(nb, o);
    o += align(nb.length + 1, 4);
    for (const [k, v] of n.props) {
      dv.setUint32(o, FDT_PROP);
      dv.setUint32(o + 4, v.length);
      dv.setUint32(o + 8, nameOffset(k));
      out.set(v, o + 12);
      o += 12 + align(v.length, 4);
    }
    for (const c of n.children.values()) writeNode(c);
    dv.setUint32(o, FDT_END_NODE);
    o += 4;
  };
  writeNode(fdt.root);
  dv.setUint32(o, FDT_END);

  o = stringsOff;
  for (const p of strParts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// decode

export interface Header {
  totalsize: number; offDtStruct: number; offDtStrings: number; offMemRsvmap: number;
  version: number; lastCompVersion: number; bootCpuidPhys: number; sizeDtStrings: number; sizeDtStruct: number;
}

/**
 * Read and check the header; the blob may be longer than totalsize (trailing bytes are ignored).
 * With `headerOnly`, `blob` holds just the 40 header bytes of a larger blob: the offsets are
 * checked against totalsize only (decode() checks them against the real bytes).
 */
export function readHeader(blob: Uint8Array, headerOnly = false): Header {
  if (blob.length < HEADER_SIZE) throw new FdtError(0, `blob of ${blob.length} bytes is shorter than the ${HEADER_SIZE}-byte header`);
  const dv = new DataView(blob.buffer, blob.byteOffset, HEADER_SIZE);
  const magic = dv.getUint32(0);
  if (magic !== FDT_MAGIC) throw new FdtError(0, `bad magic 0x${magic.toString(16)} (expected 0xd00dfeed)`);
  const h: Header = {
    totalsize: dv.getUint32(4), offDtStruct: dv.getUint32(8), offDtStrings: dv.getUint32(12),
    offMemRsvmap: dv.getUint32(16), version: dv.getUint32(20), lastCompVersion: dv.getUint32(24),
    bootCpuidPhys: dv.getUint32(28), sizeDtStrings: dv.getUint32(32), sizeDtStruct: dv.getUint32(36),
  };
  if (h.version < FDT_VERSION) throw new FdtError(20, `unsupported version ${h.version} (need ${FDT_VERSION})`);
  if (h.lastCompVersion > FDT_VERSION) throw new FdtError(24, `last compatible version ${h.lastCompVersion} is newer than ${FDT_VERSION}`);
  if (h.totalsize < HEADER_SIZE) throw new FdtError(4, `totalsize ${h.totalsize} is smaller than the header`);
  if (!headerOnly && h.totalsize > blob.length) throw new FdtError(4, `totalsize ${h.totalsize} exceeds the blob's ${blob.length} bytes`);
  const inside = (off: number, size: number, what: string, at: number): void => {
    if (off < HEADER_SIZE || off > h.totalsize || size > h.totalsize - off) {
      throw new FdtError(at, `${what} [${off}, +${size}) lies outside the blob (totalsize ${h.totalsize})`);
    }
  };
  if (h.offMemRsvmap % 8 !== 0) throw new FdtError(16, `memory reservation block offset ${h.offMemRsvmap} is not 8-byte aligned`);
  inside(h.offMemRsvmap, 16, 'memory reservation block', 16);
  if (h.offDtStruct % 4 !== 0) throw new FdtError(8, `structure block offset ${h.offDtStruct} is not 4-byte aligned`);
  if (h.sizeDtStruct % 4 !== 0) throw new FdtError(36, `structure block size ${h.sizeDtStruct} is not a multiple of 4`);
  inside(h.offDtStruct, h.sizeDtStruct, 'structure block', 8);
  inside(h.offDtStrings, h.sizeDtStrings, 'strings block', 12);
  return h;
}

/** Decode a DTB. Raises only FdtError. */
export function decode(input: Uint8Array): Fdt {
  if (!(input instanceof Uint8Array)) throw new FdtError(0, 'input is not a byte array');
  const h = readHeader(input);
  // Private copy: the tree never aliases the caller's memory.
  const blob = input.slice(0, h.totalsize);
  const dv = new DataView(blob.buffer, 0, blob.length);

  // Memory reservation block: (u64 address, u64 size) pairs up to a (0, 0) terminator.
  const memReserve: MemReserve[] = [];
  for (let o = h.offMemRsvmap; ; o += 16) {
    if (o + 16 > h.totalsize) throw new FdtError(o, 'memory reservation block has no terminator inside the blob');
    const address = dv.getBigUint64(o);
    const size = dv.getBigUint64(o + 8);
    if (address === 0n && size === 0n) break;
    memReserve.push({ address, size });
  }

  const sBeg = h.offDtStrings;
  const sEnd = sBeg + h.sizeDtStrings;
  const nameCache = new Map<number, string>();
  const propName = (nameoff: number, at: number): string => {
    const cached = nameCache.get(nameoff);
    if (cached !== undefined) return cached;
    if (nameoff >= h.sizeDtStrings) throw new FdtError(at, `property name offset ${nameoff} outside the strings block (${h.sizeDtStrings} bytes)`);
    const end = blob.indexOf(0, sBeg + nameoff);
    if (end < 0 || end >= sEnd) throw new FdtError(sBeg + nameoff, 'property name is not NUL-terminated inside the strings block');
    if (end === sBeg + nameoff) throw new FdtError(at, 'empty property name');
    const s = utf8d.decode(blob.subarray(sBeg + nameoff, end));
    nameCache.set(nameoff, s);
    return s;
  };

  const stBeg = h.offDtStruct;
  const stEnd = stBeg + h.sizeDtStruct;
  const stack: FdtNode[] = [];
  let root: FdtNode | undefined;
  let o = stBeg;
  let ended = false;
  const sawChild = new WeakSet<FdtNode>();

  while (!ended) {
    if (o + 4 > stEnd) throw new FdtError(o, 'structure block ends without FDT_END');
    const token = dv.getUint32(o);
    const at = o;
    o += 4;
    switch (token) {
      case FDT_BEGIN_NODE: {
        if (root && stack.length === 0) throw new FdtError(at, 'a second top-level node after the root');
        if (stack.length >= MAX_DEPTH) throw new FdtError(at, `nesting deeper than ${MAX_DEPTH}`);
        const end = blob.indexOf(0, o);
        if (end < 0 || end >= stEnd) throw new FdtError(o, 'node name is not NUL-terminated inside the structure block');
        const name = utf8d.decode(blob.subarray(o, end));
        o = align(end + 1, 4);
        if (o > stEnd) throw new FdtError(at, 'node name runs past the structure block');
        const node = new FdtNode(name);
        const parent = stack[stack.length - 1];
        if (parent) {
          if (name === '') throw new FdtError(at, 'a subnode with an empty name');
          if (parent.children.has(name)) throw new FdtError(at, `duplicate node "${name}"`);
          parent.children.set(name, node);
          sawChild.add(parent);
        } else {
          if (name !== '') throw new FdtError(at, `root node has name "${name}" (must be empty)`);
          root = node;
        }
        stack.push(node);
        break;
      }
      case FDT_END_NODE:
        if (stack.length === 0) throw new FdtError(at, 'FDT_END_NODE without a matching FDT_BEGIN_NODE');
        stack.pop();
        break;
      case FDT_PROP: {
        const node = stack[stack.length - 1];
        if (!node) throw new FdtError(at, 'property outside any node');
        if (o + 8 > stEnd) throw new FdtError(at, 'property header runs past the structure block');
        const len = dv.getUint32(o);
        const nameoff = dv.getUint32(o + 4);
        o += 8;
        if (len > stEnd - o) throw new FdtError(at, `property length ${len} runs past the structure block`);
        const name = propName(nameoff, at);
        if (sawChild.has(node)) throw new FdtError(at, `property "${name}" after a subnode`);
        if (node.props.has(name)) throw new FdtError(at, `duplicate property "${name}"`);
        node.props.set(name, blob.subarray(o, o + len));
        o = align(o + len, 4);
        if (o > stEnd) throw new FdtError(at, 'property padding runs past the structure block');
        break;
      }
      case FDT_NOP:
        break;
      case FDT_END:
        if (stack.length !== 0) throw new FdtError(at, `FDT_END inside an open node (depth ${stack.length})`);
        if (!root) throw new FdtError(at, 'FDT_END before any node');
        ended = true;
        break;
      default:
        throw new FdtError(at, `unknown token 0x${token.toString(16)}`);
    }
  }
  return new Fdt(root!, memReserve, h.bootCpuidPhys);
}

/** True when the bytes start with a plausible DTB header (magic and sizes). Never throws. */
export function looksLikeFdt(blob: Uint8Array): boolean {
  try {
    readHeader(blob);
    return true;
  } catch {
    return false;
  }
}
