/*
 * handover/kho: KHO on its own across an in-place exec, without LUO (the `luo/kho` entry
 * point): bootKho() adopts what the previous image handed over, kexec() execs the next one
 * with this image's preserved memory. For a program that wants preserved memory and nothing
 * else; a service uses boot() and luo.reboot().
 *
 * bootKho: no LUO_HANDOVER → a fresh arena; a valid kho-v1 entry → the arena adopted, its
 * unpreserved pages released; anything wrong → the kernel's panic (one line, exit 70), or a
 * cold boot with onCorrupt 'cold' (the inherited arena closed). A successor handover is not
 * for a bare KHO: use boot().
 */
import { HandoverError } from '../errors.js';
import { Kho, type KhoOptions } from '../kho/kho.js';
import { panic } from '../panic.js';
import { HANDOVER_ENV } from '../uapi/handover.js';
import { execInPlace, type ExecOptions } from './exec.js';
import { discard, pendingKind, receive } from './index.js';
import type { Image } from './image.js';

export * from '../kho/index.js';
export { selfImage, resolveExecutable, type Image } from './image.js';
export { childPids, reapInheritedChildren } from './exec.js';
export { EXIT_PANIC, panic } from '../panic.js';

export interface BootOptions extends KhoOptions {
  onCorrupt?: 'panic' | 'cold';
  /** Environment to read LUO_HANDOVER from (default process.env; the variable is removed). */
  env?: NodeJS.ProcessEnv;
}

export function bootKho(opts: BootOptions): Kho {
  const env = opts.env ?? process.env;
  const raw = env[HANDOVER_ENV];
  try {
    if (pendingKind(env) === 'successor') throw new HandoverError('a successor handover needs luo\'s boot(), not bootKho()');
    const incoming = receive(env);
    return incoming ? Kho.adopt(incoming.entry, opts) : Kho.create(opts);
  } catch (e) {
    delete env[HANDOVER_ENV];
    const msg = e instanceof HandoverError ? e.message : `ERR_HANDOVER: ${(e as Error).message}`;
    if (opts.onCorrupt !== 'cold') panic(msg);
    process.emitWarning(`luo: ignoring the handover and booting cold: ${msg}`);
    discard(raw);
    return Kho.create(opts);
  }
}

/**
 * Execute the next image in this pid; with KHO finalized the handover goes with it, otherwise
 * the next image boots cold. Returns only by throwing (the image was not replaced).
 */
export function kexec(kho: Kho | null, image: Image, opts: ExecOptions = {}): never {
  const entry = kho?.finalized ? kho.handover() : null;
  const keep = [...(opts.keepFds ?? [])];
  if (kho && entry) keep.push(kho.arena.fd);
  return execInPlace(entry, image, { ...opts, keepFds: keep });
}
