/*
 * util/pattern: deterministic byte patterns for checking that memory survived exactly.
 * The value of each 32-bit word depends on its absolute address and a seed, so a page moved,
 * lost, zeroed or duplicated is caught. Pure functions; no state.
 */

/** Fill `view` (whose first byte is at arena address `addr`, 4-byte aligned) with the pattern. */
export function fillPattern(view: Uint8Array, addr: number, seed: number): void {
  const words = new Uint32Array(view.buffer, view.byteOffset, view.length >>> 2);
  const base = addr >>> 2;
  for (let i = 0; i < words.length; i++) words[i] = Math.imul(base + i, 2654435761) ^ seed;
  for (let i = words.length * 4; i < view.length; i++) view[i] = (seed + i) & 0xff;
}

/** Offset of the first byte that differs from the pattern, or -1 when all match. */
export function checkPattern(view: Uint8Array, addr: number, seed: number): number {
  const words = new Uint32Array(view.buffer, view.byteOffset, view.length >>> 2);
  const base = addr >>> 2;
  for (let i = 0; i < words.length; i++) {
    if (words[i] !== (Math.imul(base + i, 2654435761) ^ seed) >>> 0) return i * 4;
  }
  for (let i = words.length * 4; i < view.length; i++) if (view[i] !== ((seed + i) & 0xff)) return i;
  return -1;
}
