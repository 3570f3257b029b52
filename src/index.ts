/*
 * luo: the public API. Everything a service needs is exported from here; the layers below
 * (src/sys in particular) are internal.
 */
export * from './errors.js';
export { resolveConfig, ENV, type LuoConfig } from './config.js';
export * as fdt from './fdt/index.js';
export { Fdt, FdtNode } from './fdt/index.js';
export { Kho, bootKho, kexec, selfImage, PAGE_SIZE, HANDOVER_ENV, EXIT_PANIC, type Image } from './kho/index.js';
