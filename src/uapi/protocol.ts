/*
 * uapi/protocol: the control protocol as a contract (docs/uapi.md is its prose).
 *
 * One request per SOCK_SEQPACKET datagram: u32 ioctl number, then the v3 struct whose first
 * u32 is its size; little-endian; fds ride as SCM_RIGHTS. One reply per request: s32 result
 * (0 or a negative errno), then the struct as the service filled it, cut to
 * min(user size, known size); FD_RESTORE's fd rides with a successful reply only.
 *
 * The v3 numbers 0xBA00-0xBA06 keep their meaning and layout; 0xBA10 and up are luo's own
 * (userspace-only) extensions. Changing a layout here is an ABI break.
 */

export const IOCTL = {
  FD_PRESERVE: 0xba00,
  FD_UNPRESERVE: 0xba01,
  FD_RESTORE: 0xba02,
  GET_STATE: 0xba03,
  SET_EVENT: 0xba04,
  GET_FD_STATE: 0xba05,
  SET_FD_EVENT: 0xba06,
  /** luo extension: load the next image (argv, environment, working directory). */
  LOAD_IMAGE: 0xba10,
  /** luo extension: reboot(LINUX_REBOOT_CMD_KEXEC): FREEZE, then exec the loaded image (flag
   *  REBOOT_SUCCESSOR: start it first and hand over to it). */
  REBOOT: 0xba11,
  /** luo extension: how the last update ended (committed, rolled back, cancelled) and why. */
  GET_UPDATE: 0xba12,
  /** luo extension: what this image was handed over and what became of it (the agent's report). */
  GET_CARRIED: 0xba13,
} as const;

export type IoctlName = keyof typeof IOCTL;

/** REBOOT flags: hand over to a pre-started successor process instead of exec'ing in place. */
export const REBOOT_SUCCESSOR = 1;

export interface Layout {
  name: IoctlName;
  /** sizeof the struct as this service knows it. */
  size: number;
  /** offsetofend of the last required field. */
  minSize: number;
  /** Implicit padding: [offset, length] ranges that must be zero. */
  padding: Array<[number, number]>;
  /** fds the request must carry. */
  fdsIn: number;
  /** Variable length (LOAD_IMAGE): everything up to `size` is the struct. */
  variable?: boolean;
}

export const LAYOUTS: Record<number, Layout> = {
  [IOCTL.FD_PRESERVE]: { name: 'FD_PRESERVE', size: 16, minSize: 16, padding: [], fdsIn: 1 },
  [IOCTL.FD_UNPRESERVE]: { name: 'FD_UNPRESERVE', size: 16, minSize: 16, padding: [[4, 4]], fdsIn: 0 },
  [IOCTL.FD_RESTORE]: { name: 'FD_RESTORE', size: 16, minSize: 16, padding: [], fdsIn: 0 },
  [IOCTL.GET_STATE]: { name: 'GET_STATE', size: 8, minSize: 8, padding: [], fdsIn: 0 },
  [IOCTL.SET_EVENT]: { name: 'SET_EVENT', size: 8, minSize: 8, padding: [], fdsIn: 0 },
  [IOCTL.GET_FD_STATE]: { name: 'GET_FD_STATE', size: 24, minSize: 16, padding: [[5, 3], [20, 4]], fdsIn: 0 },
  [IOCTL.SET_FD_EVENT]: { name: 'SET_FD_EVENT', size: 16, minSize: 16, padding: [], fdsIn: 0 },
  [IOCTL.LOAD_IMAGE]: { name: 'LOAD_IMAGE', size: 16, minSize: 16, padding: [[12, 4]], fdsIn: 0, variable: true },
  [IOCTL.REBOOT]: { name: 'REBOOT', size: 24, minSize: 8, padding: [], fdsIn: 0 },
  [IOCTL.GET_UPDATE]: { name: 'GET_UPDATE', size: 48, minSize: 8, padding: [], fdsIn: 0, variable: true },
  [IOCTL.GET_CARRIED]: { name: 'GET_CARRIED', size: 16, minSize: 8, padding: [], fdsIn: 0, variable: true },
};

/**
 * REBOOT struct: u32 size · u32 flags · u32 commit_ms (how long the next version has, from
 * the handover, to FINISH before it is rolled back; 0: the service's default) · u32
 * takeover_ms (successor: how long it may take to take the handover once the service has
 * frozen; 0: default) · s32 pid (out: the process that serves the next version) · u32
 * ready_ms (how long the next version may take to start: a successor to say it is ready, an
 * image exec'd in place to start its control device; 0: the default).
 * An 8-byte struct (flags only) is the same with the defaults.
 */
export function encodeReboot(r: { flags: number; commitMs?: number; takeoverMs?: number; readyMs?: number }): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(24, 0);
  b.writeUInt32LE(r.flags, 4);
  b.writeUInt32LE(r.commitMs ?? 0, 8);
  b.writeUInt32LE(r.takeoverMs ?? 0, 12);
  b.writeUInt32LE(r.readyMs ?? 0, 20);
  return b;
}

/** GET_UPDATE's outcome field. */
export const OUTCOME = { none: 0, committed: 1, 'rolled-back': 2, cancelled: 3 } as const;
export type OutcomeName = keyof typeof OUTCOME;

export interface UpdateStatus {
  outcome: OutcomeName;
  mode: 'exec' | 'successor';
  /** The failed version's exit status; null when unknown. */
  status: number | null;
  resumed: number;
  lost: number;
  /** liveupdate-number of the service now. */
  number: number;
  /** The failure's errno name (ECHILD, ETIMEDOUT, ECANCELED…), or null. */
  errno: number;
  writtenBack: number;
  /** The pid serving now. */
  pid: number;
  reason: string;
  stderr: string[];
}

/**
 * GET_UPDATE struct (variable: the caller gives its size, e.g. 8192, and gets the struct cut
 * to it): u32 size · u32 outcome (OUTCOME) · u32 mode (0 exec, 1 successor) · s32 status (-1
 * unknown) · u32 resumed · u32 lost · u32 liveupdate_number · s32 errno (0, or the failure's
 * positive errno) · u64 written_back · u32 pid · u32 text_len · then text_len bytes of UTF-8:
 * the reason, and after a newline each of the failed version's last stderr lines.
 */
export function encodeUpdate(u: UpdateStatus, size: number): Buffer {
  const text = Buffer.from([u.reason, ...u.stderr].join('\n'));
  const out = Buffer.alloc(Math.max(48, size));
  out.writeUInt32LE(out.length, 0);
  out.writeUInt32LE(OUTCOME[u.outcome], 4);
  out.writeUInt32LE(u.mode === 'successor' ? 1 : 0, 8);
  out.writeInt32LE(u.status ?? -1, 12);
  out.writeUInt32LE(u.resumed, 16);
  out.writeUInt32LE(u.lost, 20);
  out.writeUInt32LE(u.number, 24);
  out.writeInt32LE(u.errno, 28);
  out.writeBigUInt64LE(BigInt(u.writtenBack), 32);
  out.writeUInt32LE(u.pid, 40);
  const n = Math.min(text.length, out.length - 48);
  out.writeUInt32LE(n, 44);
  text.copy(out, 48, 0, n);
  return out;
}

export function decodeUpdate(b: Buffer): UpdateStatus {
  const names = Object.keys(OUTCOME) as OutcomeName[];
  const n = b.length >= 48 ? Math.min(b.readUInt32LE(44), b.length - 48) : 0;
  const [reason = '', ...stderr] = b.length >= 48 ? b.subarray(48, 48 + n).toString().split('\n') : [];
  const status = b.length >= 16 ? b.readInt32LE(12) : -1;
  return {
    outcome: names[b.length >= 8 ? b.readUInt32LE(4) : 0] ?? 'none',
    mode: b.length >= 12 && b.readUInt32LE(8) === 1 ? 'successor' : 'exec',
    status: status < 0 ? null : status,
    resumed: b.length >= 20 ? b.readUInt32LE(16) : 0,
    lost: b.length >= 24 ? b.readUInt32LE(20) : 0,
    number: b.length >= 28 ? b.readUInt32LE(24) : 0,
    errno: b.length >= 32 ? b.readInt32LE(28) : 0,
    writtenBack: b.length >= 40 ? Number(b.readBigUInt64LE(32)) : 0,
    pid: b.length >= 44 ? b.readUInt32LE(40) : 0,
    reason,
    stderr,
  };
}

/** One handed-over token, as GET_CARRIED reports it. */
export interface CarriedEntry {
  token: string;
  compatible: string;
  /** How the previous image named it (a server's address); '' if it did not. */
  label: string;
  /** Connections the previous image closed at the freeze instead of carrying them. */
  closedAtFreeze: number;
  restored: boolean;
  /** Released at FINISH, never restored by this version. */
  released: boolean;
  /** What restoring it found: connections, upgraded, taken, refused, unclaimed. */
  counts: Record<string, number>;
}

/**
 * GET_CARRIED struct (variable, like GET_UPDATE): u32 size · u32 text_len · u32 liveupdate_number
 * · u32 0 · then text_len bytes of UTF-8 JSON: an array of CarriedEntry (every token the
 * previous image handed over, and what became of it here). Cut to the caller's size; a
 * caller that gets text_len above what fits asks again with a bigger one.
 */
export function encodeCarried(entries: CarriedEntry[], number: number, size: number): Buffer {
  const text = Buffer.from(JSON.stringify(entries));
  const out = Buffer.alloc(Math.max(16, size));
  out.writeUInt32LE(out.length, 0);
  out.writeUInt32LE(text.length, 4);
  out.writeUInt32LE(number, 8);
  text.copy(out, 16, 0, Math.min(text.length, out.length - 16));
  return out;
}

/** The entries, or null when the caller's buffer was too small (`need`: the size to ask for). */
export function decodeCarried(b: Buffer): { entries: CarriedEntry[] | null; need: number; number: number } {
  if (b.length < 16) return { entries: null, need: 16, number: 0 };
  const n = b.readUInt32LE(4);
  const number = b.readUInt32LE(8);
  if (16 + n > b.length) return { entries: null, need: 16 + n, number };
  const parsed = JSON.parse(b.subarray(16, 16 + n).toString()) as unknown;
  if (!Array.isArray(parsed)) throw new Error('GET_CARRIED: not an array');
  return { entries: parsed as CarriedEntry[], need: 16 + n, number };
}

/** Largest request accepted (LOAD_IMAGE carries an argv and an environment). */
export const MAX_REQUEST = 65536;

/**
 * LOAD_IMAGE struct: u32 size, u32 argc, u32 envc, u32 reserved (0), then NUL-terminated
 * strings: the working directory, argc arguments (argv[0] is the program to exec), envc
 * "KEY=value" entries. argc 0: the service's own command line; envc 0: the service's
 * environment; an empty directory: the service's.
 */
export function encodeLoadImage(img: { argv?: string[]; env?: string[]; cwd?: string }): Buffer {
  const strings = [img.cwd ?? '', ...(img.argv ?? []), ...(img.env ?? [])].map((s) => Buffer.from(`${s}\0`));
  const body = Buffer.concat(strings);
  const out = Buffer.alloc(16 + body.length);
  out.writeUInt32LE(out.length, 0);
  out.writeUInt32LE(img.argv?.length ?? 0, 4);
  out.writeUInt32LE(img.env?.length ?? 0, 8);
  body.copy(out, 16);
  return out;
}

export function decodeLoadImage(s: Buffer): { argv: string[]; env: string[]; cwd: string } | null {
  const argc = s.readUInt32LE(4);
  const envc = s.readUInt32LE(8);
  const parts = s.subarray(16).toString('utf8').split('\0');
  if (parts.at(-1) !== '' || parts.length - 1 !== 1 + argc + envc) return null;
  return { cwd: parts[0]!, argv: parts.slice(1, 1 + argc), env: parts.slice(1 + argc, 1 + argc + envc) };
}
