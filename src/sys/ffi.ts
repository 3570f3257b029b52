/*
 * sys/ffi: koffi and libc, loaded once on first use (koffi's loader costs ~15 ms: programs
 * that never call libc never pay it). Internal to src/sys: index.ts does not export it.
 */
import { createRequire } from 'node:module';

type Koffi = typeof import('koffi');
let koffiMod: Koffi | undefined;
let soHandle: ReturnType<Koffi['load']> | undefined;

export function koffi(): Koffi {
  koffiMod ??= createRequire(import.meta.url)('koffi') as Koffi;
  return koffiMod;
}

/** koffi and the loaded libc. */
export function koffiLib(): { koffi: Koffi; so: ReturnType<Koffi['load']> } {
  soHandle ??= koffi().load('libc.so.6');
  return { koffi: koffi(), so: soHandle };
}
