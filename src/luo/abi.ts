/*
 * luo/abi: the numbers and names other programs rely on: states, events, compatible strings,
 * token spelling in the handover tree. Changing any of these is an ABI break: a changed tree
 * layout gets a new compatible string.
 */
import { fail } from '../errors.js';

/** enum liveupdate_state (reference §1.1): the global state and each file's state. */
export enum State {
  UNDEFINED = 0,
  NORMAL = 1,
  PREPARED = 2,
  FROZEN = 3,
  UPDATED = 4,
}

/** enum liveupdate_event. */
export enum Event {
  PREPARE = 0,
  FREEZE = 1,
  FINISH = 2,
  CANCEL = 3,
  /** luo's extension: in UPDATED, before FINISH, give up this update: the previous version
   *  resumes (it can until FINISH). Not in v3 (the kernel cannot go back after kexec). */
  ROLLBACK = 16,
}

export const STATE_NAMES: Record<State, string> = {
  [State.UNDEFINED]: 'undefined',
  [State.NORMAL]: 'normal',
  [State.PREPARED]: 'prepared',
  [State.FROZEN]: 'frozen',
  [State.UPDATED]: 'updated',
};

export const EVENT_NAMES: Record<Event, string> = {
  [Event.PREPARE]: 'prepare',
  [Event.FREEZE]: 'freeze',
  [Event.FINISH]: 'finish',
  [Event.CANCEL]: 'cancel',
  [Event.ROLLBACK]: 'rollback',
};

export function stateName(s: number): string {
  return STATE_NAMES[s as State] ?? `unknown(${s})`;
}

export function parseEvent(s: string): Event {
  const e = Object.entries(EVENT_NAMES).find(([, n]) => n === s.toLowerCase());
  if (!e) throw fail('EINVAL', `unknown event ${JSON.stringify(s)} (prepare, freeze, finish, cancel)`);
  return Number(e[0]) as Event;
}

export { LUO_SUBTREE, LUO_COMPATIBLE, SUBSYSTEMS_NODE, SUBSYSTEMS_COMPATIBLE, FILES_SUBSYSTEM, FILES_COMPATIBLE, LIVEUPDATE_NUMBER } from '../uapi/trees.js';

export const U64_MAX = (1n << 64n) - 1n;

/** A token as the kernel names its node: printf("%#llx"): "0" for zero, else "0x2a". */
export function tokenName(token: bigint): string {
  return token === 0n ? '0' : `0x${token.toString(16)}`;
}

/** Parse a token node name (kstrtou64 base 0 on what tokenName writes). Throws EINVAL. */
export function parseTokenName(name: string): bigint {
  if (name === '0') return 0n;
  if (!/^0x[0-9a-f]{1,16}$/.test(name)) throw fail('EINVAL', `token node name ${JSON.stringify(name)}`);
  return BigInt(name);
}

/** A caller's token as a u64 bigint. EINVAL outside 0..2^64-1. */
export function toToken(t: bigint | number | string): bigint {
  let v: bigint;
  try {
    v = BigInt(t);
  } catch {
    throw fail('EINVAL', `token ${JSON.stringify(t)} is not an integer`);
  }
  if (v < 0n || v > U64_MAX) throw fail('EINVAL', `token ${t} is not a u64`);
  return v;
}

/** Subsystem names become FDT property names: keep them in dtc's alphabet. */
export const SUBSYSTEM_NAME_RE = /^[A-Za-z0-9,._+\-]{1,63}$/;
export const COMPATIBLE_RE = /^[A-Za-z0-9,._+\-]{1,47}$/;
