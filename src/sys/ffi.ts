/*
 * sys/ffi: koffi and libc, loaded once on first use (koffi's loader costs ~15 ms: programs
 * that never call libc never pay it), and the named types luo declares. Internal to src/sys:
 * index.ts does not export it.
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

/**
 * A named struct type, defined once per process: koffi's type names are global to the
 * process, and a second copy of luo (a guard's bundle, another package version) defines the
 * same names. The first definition wins; the layouts are luo's own and never change.
 */
type Spec = Parameters<Koffi['array']>[0];
export function struct(name: string, def: Record<string, Spec>): ReturnType<Koffi['type']> {
  const k = koffi();
  try {
    return k.type(name);
  } catch {
    return k.struct(name, def);
  }
}
