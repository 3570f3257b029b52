/*
 * fdt: the flattened device tree (DTB) codec, pure and without I/O. See tree.ts (the model),
 * codec.ts (encode/decode, strict) and dts.ts (DTS source that dtc accepts).
 */
export { Fdt, FdtNode, nodesEqual, type MemReserve } from './tree.js';
export { encode, decode, readHeader, looksLikeFdt, MAX_DEPTH, FDT_MAGIC, FDT_VERSION } from './codec.js';
export { toDts } from './dts.js';
