/*
 * kho: Kexec HandOver for a process, preserved memory only. arena.ts (the memfd "physical
 * memory"), alloc.ts (its page allocator), kho.ts (preserve, subtrees, finalize/abort,
 * boot-time restore) and tree.ts (an FDT kept in preserved memory). How the arena reaches the
 * next image is src/handover's.
 */
export { PAGE_SIZE, PAGE_SHIFT, PageAllocator } from './alloc.js';
export { Arena, ARENA_NAME } from './arena.js';
export { Kho, KHO_COMPATIBLE, fdtChecksum, type KhoOptions } from './kho.js';
export { PreservedTree, type TreeOptions } from './tree.js';
export { HANDOVER_ENV } from '../uapi/handover.js';
