/*
 * kho/tree: one FDT kept in preserved arena memory for the next image, rewritten in place
 * while it fits (the LUO tree, the files tree, anything stored with Kho.storeFdt).
 *
 * Lifecycle: write(tree) → the first write allocates and preserves pages for it (`room` says
 * how many, with slack for later rewrites) and, when the tree is a KHO subtree, adds it under
 * its name; a later write rewrites in place when the blob fits, else frees the pages (and
 * removes the subtree) and starts again → destroy() removes the subtree and frees the pages.
 * While KHO is finalized a destroy cannot unpreserve: the pages then stay preserved (v3 keeps
 * them too) and are forgotten here. A failed write leaves the previous tree as it was.
 */
import { encode, type Fdt, type FdtNode } from '../fdt/index.js';
import { PAGE_SIZE } from './alloc.js';

/** What a tree needs of KHO (Kho has it). */
export interface TreeMemory {
  allocPreserve(size: number): number;
  unpreserveFree(addr: number, size: number): void;
  view(addr: number, len: number): Uint8Array;
  addSubtree(name: string, addr: number): void;
  removeSubtree(name: string): void;
}

export interface TreeOptions {
  /** Bytes to allocate for a blob of `len` bytes (default: whole pages). */
  room?: (len: number) => number;
  /** Add it as this KHO subtree (and remove it when the pages go). */
  subtree?: string;
}

const pages = (len: number): number => Math.max(PAGE_SIZE, Math.ceil(len / PAGE_SIZE) * PAGE_SIZE);

export class PreservedTree {
  readonly #kho: TreeMemory;
  readonly #opts: TreeOptions;
  #region: { addr: number; size: number } | null = null;

  constructor(kho: TreeMemory, opts: TreeOptions = {}) {
    this.#kho = kho;
    this.#opts = opts;
  }

  /** Address of the tree in the arena (null before the first write or after destroy). */
  get addr(): number | null {
    return this.#region?.addr ?? null;
  }

  /** Write `tree`; returns its address. */
  write(tree: Fdt | FdtNode): number {
    const blob = encode(tree);
    if (this.#region && blob.length <= this.#region.size) {
      this.#kho.view(this.#region.addr, blob.length).set(blob);
      return this.#region.addr;
    }
    this.destroy();
    const size = pages(this.#opts.room?.(blob.length) ?? blob.length);
    const addr = this.#kho.allocPreserve(size);
    this.#kho.view(addr, blob.length).set(blob);
    if (this.#opts.subtree) {
      try {
        this.#kho.addSubtree(this.#opts.subtree, addr);
      } catch (e) {
        this.#kho.unpreserveFree(addr, size);
        throw e;
      }
    }
    this.#region = { addr, size };
    return addr;
  }

  destroy(): void {
    const r = this.#region;
    if (!r) return;
    this.#region = null;
    try {
      if (this.#opts.subtree) this.#kho.removeSubtree(this.#opts.subtree);
      this.#kho.unpreserveFree(r.addr, r.size);
    } catch (e) {
      if ((e as { code?: string }).code !== 'EBUSY') throw e;
    }
  }
}
