#!/usr/bin/env node
/*
 * cli/main: the `luo` agent (the kernel's LiveupdateD and luoctl). Each command is a function
 * returning an exit code. Errors are one line, "luo: <CODE>: <cause>", never a stack trace.
 *
 * Exit codes: 0 success · 1 the operation failed (the service answered an errno, or the
 * update failed and was cancelled) · 2 usage · 3 malformed input (a DTB) · 4 no service to
 * talk to (nothing listening at the device path) · 5 timed out.
 *
 * The device allows one agent at a time, and closing the connection drops what this agent
 * preserved (v3 §2.4), so `preserve` holds its connection until interrupted, and `update`
 * takes --preserve TOKEN=FILE to preserve within its own session.
 */
import fs from 'node:fs';
import path from 'node:path';
import { defaultRundir, validName } from '../config.js';
import { DeviceClient, structs } from '../device/client.js';
import { LuoError } from '../errors.js';
import { decode, toDts } from '../fdt/index.js';
import { Event, STATE_NAMES, State, parseEvent, stateName, toToken } from '../luo/abi.js';
import { IOCTL, REBOOT_SUCCESSOR, encodeLoadImage } from '../uapi/protocol.js';

const USAGE = `usage: luo <command> [options] [args]

  state [--watch]              the service's state (normal, prepared, frozen, updated, undefined)
  prepare | cancel | finish    send a global event
  preserve TOKEN FILE          preserve FILE under TOKEN; holds the device until interrupted
  restore TOKEN [--out FILE]   restore TOKEN (after an update); copy its contents to FILE/stdout
  fd-state TOKEN [--incoming]  a preserved file's state
  fd-event TOKEN EVENT         per-file event: prepare, freeze, cancel, finish
  reboot [--successor] [-- CMD...]
                               FREEZE and exec the next image (default: the service's own command)
  update [--preserve T=FILE]... [--timeout S] [--successor] [-- CMD...]
                               the whole update: PREPARE, load, reboot, wait for UPDATED, FINISH
                               --successor: start the next image first and hand over to it
                               (a shorter pause, a failed start cancels; the pid changes)
  dump [FILE.dtb]              a DTB as DTS; without FILE, the service's handover trees (debug view)

options: --rundir DIR | --name NAME (the service's runtime directory), --json
exit codes: 0 ok, 1 failed, 2 usage, 3 malformed input, 4 no service, 5 timed out
`;

export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, MALFORMED: 3, NO_SERVICE: 4, TIMEOUT: 5 } as const;

class UsageError extends Error {}

interface Opts { readonly rundir: string; json: boolean; flags: Map<string, string[]>; args: string[]; rest: string[] | null }

function parse(argv: string[]): Opts {
  const flags = new Map<string, string[]>();
  const args: string[] = [];
  let rest: string[] | null = null;
  const withValue = new Set(['rundir', 'name', 'out', 'preserve', 'timeout']);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest = argv.slice(i + 1);
      break;
    }
    if (a.startsWith('--')) {
      const [k, inline] = a.slice(2).split('=', 2) as [string, string | undefined];
      if (withValue.has(k)) {
        const v = inline ?? argv[++i];
        if (v === undefined) throw new UsageError(`--${k} needs a value`);
        flags.set(k, [...(flags.get(k) ?? []), v]);
      } else if (['json', 'watch', 'incoming', 'help', 'successor'].includes(k)) flags.set(k, ['1']);
      else throw new UsageError(`unknown option --${k}`);
    } else args.push(a);
  }
  const name = flags.get('name')?.[0] ?? process.env.LUO_NAME;
  const given = flags.get('rundir')?.[0] ?? process.env.LUO_RUNDIR;
  return {
    // Resolved when a command needs the service (dump FILE does not).
    get rundir(): string {
      if (given !== undefined) return path.resolve(given);
      if (name === undefined) throw new UsageError('which service? give --name NAME or --rundir DIR (or set LUO_NAME / LUO_RUNDIR)');
      return defaultRundir(validName(name));
    },
    json: flags.has('json'), flags, args, rest,
  };
}

const devicePath = (o: Opts): string => path.join(o.rundir, 'liveupdate');
const out = (o: Opts, human: string, json: Record<string, unknown>): void => void process.stdout.write(o.json ? `${JSON.stringify(json)}\n` : `${human}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function connect(o: Opts): DeviceClient {
  return DeviceClient.connect(devicePath(o));
}

function readStateFile(o: Opts): string | null {
  try {
    return fs.readFileSync(path.join(o.rundir, 'state'), 'utf8').trim();
  } catch {
    return null;
  }
}

async function cmdState(o: Opts): Promise<number> {
  const show = (s: string | null): void => {
    const value = Object.entries(STATE_NAMES).find(([, n]) => n === s)?.[0];
    out(o, s ?? 'unknown (no state file)', { state: s, value: value === undefined ? null : Number(value) });
  };
  let last = readStateFile(o);
  if (last === null && !fs.existsSync(o.rundir)) throw new LuoError('ENOENT', `no runtime directory ${o.rundir} (is the service running? --rundir/--name)`);
  show(last);
  if (!o.flags.has('watch')) return last === null ? EXIT.NO_SERVICE : EXIT.OK;
  await new Promise<void>(() => {
    fs.watch(o.rundir, () => {
      const s = readStateFile(o);
      if (s !== last && s !== null) {
        last = s;
        show(s);
      }
    });
  });
  return EXIT.OK;
}

function cmdEvent(o: Opts, event: Event): number {
  const c = connect(o);
  try {
    c.request(IOCTL.SET_EVENT, structs.u32(event));
    const st = c.request(IOCTL.GET_STATE, structs.u32()).struct.readUInt32LE(4);
    out(o, `${Event[event].toLowerCase()}: ok (state ${stateName(st)})`, { event: Event[event].toLowerCase(), ok: true, state: stateName(st) });
    return EXIT.OK;
  } finally {
    c.close();
  }
}

function openForPreserve(file: string): number {
  try {
    return fs.openSync(file, 'r+');
  } catch {
    return fs.openSync(file, 'r');
  }
}

async function cmdPreserve(o: Opts): Promise<number> {
  const [t, file] = o.args;
  if (t === undefined || file === undefined) throw new UsageError('preserve takes TOKEN FILE');
  const token = toToken(t);
  const c = connect(o);
  const fd = openForPreserve(file);
  try {
    c.request(IOCTL.FD_PRESERVE, structs.fdPreserve(token), [fd]);
  } finally {
    fs.closeSync(fd);
  }
  out(o, `preserved ${file} as token ${token}; holding the device (Ctrl-C drops the preservation)`, { token: String(token), file, ok: true });
  // Hold the connection (the interval keeps the process alive) until interrupted, or until
  // the service goes away (its device path disappears).
  await new Promise<void>((resolve) => {
    const t2 = setInterval(() => {
      if (!fs.existsSync(devicePath(o))) done();
    }, 500);
    const done = (): void => {
      clearInterval(t2);
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  c.close();
  return EXIT.OK;
}

function cmdRestore(o: Opts): number {
  const t = o.args[0];
  if (t === undefined) throw new UsageError('restore takes TOKEN');
  const token = toToken(t);
  const c = connect(o);
  try {
    const r = c.request(IOCTL.FD_RESTORE, structs.token16(token));
    const fd = r.fds[0];
    if (fd === undefined) throw new LuoError('EPROTO', 'FD_RESTORE succeeded but no fd came with the reply');
    const dest = o.flags.get('out')?.[0];
    let bytes = 0;
    if (dest || !process.stdout.isTTY) {
      const buf = Buffer.alloc(1 << 16);
      const w = dest ? fs.openSync(dest, 'w') : 1;
      for (let pos = 0; ; ) {
        const n = fs.readSync(fd, buf, 0, buf.length, pos);
        if (n <= 0) break;
        fs.writeSync(w, buf, 0, n);
        pos += n;
        bytes += n;
      }
      if (dest) fs.closeSync(w);
    }
    fs.closeSync(fd);
    if (dest || o.json || process.stdout.isTTY) out(o, `restored token ${token}${dest ? `: ${bytes} bytes written to ${dest}` : ''}`, { token: String(token), ok: true, bytes, out: dest ?? null });
    return EXIT.OK;
  } finally {
    c.close();
  }
}

function cmdFdState(o: Opts): number {
  const t = o.args[0];
  if (t === undefined) throw new UsageError('fd-state takes TOKEN');
  const c = connect(o);
  try {
    const st = c.request(IOCTL.GET_FD_STATE, structs.getFdState(toToken(t), o.flags.has('incoming'))).struct.readUInt32LE(16);
    out(o, stateName(st), { token: t, state: stateName(st), value: st });
    return EXIT.OK;
  } finally {
    c.close();
  }
}

function cmdFdEvent(o: Opts): number {
  const [t, ev] = o.args;
  if (t === undefined || ev === undefined) throw new UsageError('fd-event takes TOKEN EVENT');
  const c = connect(o);
  try {
    c.request(IOCTL.SET_FD_EVENT, structs.setFdEvent(toToken(t), parseEvent(ev)));
    out(o, `${ev} token ${t}: ok`, { token: t, event: ev, ok: true });
    return EXIT.OK;
  } finally {
    c.close();
  }
}

/** LOAD_IMAGE (when a command is given) then REBOOT; returns once the old image is gone. */
function rebootOn(c: DeviceClient, o: Opts): void {
  if (o.rest && o.rest.length) {
    const argv = [...o.rest];
    c.request(IOCTL.LOAD_IMAGE, encodeLoadImage({ argv, cwd: process.cwd(), env: Object.entries(process.env).filter(([k]) => !k.startsWith('LUO_HANDOVER')).map(([k, v]) => `${k}=${v}`) }));
  }
  c.request(IOCTL.REBOOT, structs.u32(rebootFlags(o)));
  c.waitClosed();
}

const rebootFlags = (o: Opts): number => (o.flags.has('successor') ? REBOOT_SUCCESSOR : 0);

function cmdReboot(o: Opts): number {
  const c = connect(o);
  try {
    rebootOn(c, o);
    out(o, o.flags.has('successor') ? 'reboot: the old image handed over to its successor and exited' : 'reboot: the old image exec\'d the next one', { ok: true });
    return EXIT.OK;
  } finally {
    c.close();
  }
}

/** The whole update, phase by phase, with elapsed times; CANCEL on any failure where possible. */
async function cmdUpdate(o: Opts): Promise<number> {
  const timeoutMs = Number(o.flags.get('timeout')?.[0] ?? '60') * 1000;
  const t0 = performance.now();
  const phases: Array<{ phase: string; ms: number; ok: boolean; detail?: string }> = [];
  let phaseStart = t0;
  const step = (phase: string, ok = true, detail?: string): void => {
    const now = performance.now();
    phases.push({ phase, ms: Math.round((now - phaseStart) * 10) / 10, ok, detail });
    if (!o.json) process.stdout.write(`${ok ? '✓' : '✗'} ${phase.padEnd(28)} ${(now - phaseStart).toFixed(1).padStart(8)} ms${detail ? `  ${detail}` : ''}\n`);
    phaseStart = now;
  };
  const finishJson = (ok: boolean, error?: string): number => {
    if (o.json) process.stdout.write(`${JSON.stringify({ ok, totalMs: Math.round(performance.now() - t0), phases, error })}\n`);
    return ok ? EXIT.OK : error?.startsWith('ETIMEDOUT') ? EXIT.TIMEOUT : EXIT.FAILED;
  };

  let c = connect(o);
  let rebooted = false;
  try {
    for (const spec of o.flags.get('preserve') ?? []) {
      const eq = spec.indexOf('=');
      if (eq < 0) throw new UsageError(`--preserve takes TOKEN=FILE, not ${spec}`);
      const fd = openForPreserve(spec.slice(eq + 1));
      try {
        c.request(IOCTL.FD_PRESERVE, structs.fdPreserve(toToken(spec.slice(0, eq))), [fd]);
      } finally {
        fs.closeSync(fd);
      }
      step(`preserve ${spec}`);
    }
    c.request(IOCTL.SET_EVENT, structs.u32(Event.PREPARE));
    step('prepare');
    if (o.rest && o.rest.length) {
      c.request(IOCTL.LOAD_IMAGE, encodeLoadImage({ argv: o.rest, cwd: process.cwd() }));
      step('load next image', true, o.rest.join(' '));
    }
    c.request(IOCTL.REBOOT, structs.u32(rebootFlags(o)));
    rebooted = true;
    step(o.flags.has('successor') ? 'successor up, freeze + handover' : 'freeze + exec');
    c.waitClosed();
    c.close();
    // The next image boots; its device appears once it has restored what it needs.
    // Connect and ask the state, retrying until the deadline: until the next image serves its
    // device, connecting fails, or lands in the old image's dying listener and is reset.
    const deadline = performance.now() + timeoutMs;
    let st: number;
    for (;;) {
      try {
        c = connect(o);
        st = c.request(IOCTL.GET_STATE, structs.u32()).struct.readUInt32LE(4);
        break;
      } catch {
        c.close();
        if (performance.now() > deadline) throw new LuoError('ETIMEDOUT', `the next image did not start its control device within ${timeoutMs / 1000} s (state file: ${readStateFile(o) ?? 'missing'})`);
        await sleep(10);
      }
    }
    if (st !== State.UPDATED) {
      throw new LuoError('EIO', `the next image booted ${stateName(st)}, not updated: the handover did not reach it`);
    }
    step('next image up (updated)');
    c.request(IOCTL.SET_EVENT, structs.u32(Event.FINISH));
    step('finish');
    c.close();
    if (!o.json) process.stdout.write(`update done in ${(performance.now() - t0).toFixed(1)} ms\n`);
    return finishJson(true);
  } catch (e) {
    if (e instanceof UsageError) throw e;
    const msg = e instanceof LuoError ? e.message : (e as Error).message;
    step(rebooted ? 'after reboot' : 'update', false, msg);
    if (!rebooted) {
      try {
        c.request(IOCTL.SET_EVENT, structs.u32(Event.CANCEL), [], { allowFail: true });
        step('cancel (service keeps running the old code)');
      } catch { /* the connection is gone */ }
    }
    c.close();
    if (!o.json) process.stderr.write(`luo: update failed: ${msg}\n`);
    return finishJson(false, msg);
  }
}

function cmdDump(o: Opts): number {
  const file = o.args[0];
  if (file) {
    let blob: Buffer;
    try {
      blob = fs.readFileSync(file);
    } catch (e) {
      throw new LuoError((e as NodeJS.ErrnoException).code ?? 'EIO', `cannot read ${file}`);
    }
    process.stdout.write(toDts(decode(new Uint8Array(blob.buffer, blob.byteOffset, blob.length))));
    return EXIT.OK;
  }
  const dir = path.join(o.rundir, 'debug');
  if (!fs.existsSync(dir)) throw new LuoError('ENOENT', `no debug view at ${dir}: start the service with LUO_KHO_DEBUG=1`);
  for (const side of ['out', 'in']) {
    const root = path.join(dir, side, 'fdt');
    if (!fs.existsSync(root)) continue;
    process.stdout.write(`// ${side}: ${root}\n${toDts(decode(new Uint8Array(fs.readFileSync(root))))}`);
    const subs = path.join(dir, side, 'sub_fdts');
    for (const n of fs.existsSync(subs) ? fs.readdirSync(subs) : []) {
      process.stdout.write(`// ${side}: subtree ${n}\n${toDts(decode(new Uint8Array(fs.readFileSync(path.join(subs, n)))))}`);
    }
  }
  return EXIT.OK;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
      process.stdout.write(USAGE);
      return cmd === undefined ? EXIT.USAGE : EXIT.OK;
    }
    const o = parse(rest);
    switch (cmd) {
      case 'state':
        return await cmdState(o);
      case 'prepare':
        return cmdEvent(o, Event.PREPARE);
      case 'cancel':
        return cmdEvent(o, Event.CANCEL);
      case 'finish':
        return cmdEvent(o, Event.FINISH);
      case 'preserve':
        return await cmdPreserve(o);
      case 'restore':
        return cmdRestore(o);
      case 'fd-state':
        return cmdFdState(o);
      case 'fd-event':
        return cmdFdEvent(o);
      case 'reboot':
        return cmdReboot(o);
      case 'update':
        return await cmdUpdate(o);
      case 'dump':
        return cmdDump(o);
      default:
        throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`luo: ${e.message}\n${USAGE}`);
      return EXIT.USAGE;
    }
    if (e instanceof LuoError) {
      process.stderr.write(`luo: ${e.message}\n`);
      if (e.code === 'ERR_FDT' || e.code === 'ERR_DTS') return EXIT.MALFORMED;
      if (e.code === 'ETIMEDOUT') return EXIT.TIMEOUT;
      if (/cannot connect to/.test(e.message)) return EXIT.NO_SERVICE;
      return EXIT.FAILED;
    }
    process.stderr.write(`luo: ${(e as Error).message ?? String(e)}\n`);
    return EXIT.FAILED;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  if (process.argv[2] !== 'state' || !process.argv.includes('--watch')) setImmediate(() => process.exit(code));
});
