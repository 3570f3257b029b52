/*
 * sys: the OS layer. The only code in luo that calls libc (libc.ts) or builds views over raw
 * memory (mapping.ts). See each file's header for its lifecycle.
 */
export * from './libc.js';
export { Mapping, MAX_VIEW } from './mapping.js';
export * from './unix.js';
export { ReadySet } from './epoll.js';
export { pidfdOpen, processCpuNs, processState, lockFile, writtenPages } from './proc.js';
export { tcpCounters, type StreamCounters } from './tcp.js';
export { own, disown, closeFd } from './owners.js';
