/*
 * kho: Kexec HandOver for a process. arena.ts (the memfd "physical memory"), alloc.ts (its
 * page allocator), kho.ts (preserve, subtrees, finalize/abort, boot-time restore) and
 * reboot.ts (boot, and exec into the next image).
 */
export { PAGE_SIZE, PAGE_SHIFT, PageAllocator } from './alloc.js';
export { Arena, ARENA_NAME } from './arena.js';
export { Kho, KHO_COMPATIBLE, HANDOVER_ENV, type KhoOptions } from './kho.js';
export { bootKho, kexec, panic, selfImage, childPids, reapInheritedChildren, resolveExecutable, EXIT_PANIC, type Image, type BootOptions, type RebootOptions } from './reboot.js';
export { Successor, receiveHandover, retire, SUCCESSOR_FD, SUCCESSOR_PREFIX, PRESEND, type FdRef, type PresendInfo } from './successor.js';
