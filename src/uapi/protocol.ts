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
  [IOCTL.REBOOT]: { name: 'REBOOT', size: 8, minSize: 8, padding: [], fdsIn: 0 },
};

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
