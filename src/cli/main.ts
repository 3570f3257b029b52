#!/usr/bin/env node
/*
 * cli/main: the `luo` agent (the kernel's LiveupdateD and luoctl). Each command is a function
 * returning an exit code. Errors are one line, "luo: <CODE>: <cause>", never a stack trace;
 * the exit code comes from the error's code (cli/agent.ts: EXIT_BY_CODE), never its text.
 *
 * Exit codes: 0 success · 1 the operation failed (the service answered an errno, or the
 * update failed and was cancelled or rolled back) · 2 usage · 3 malformed input (a DTB) ·
 * 4 no service to talk to (nothing listening at the device, or its process is gone) ·
 * 5 timed out without an outcome.
 *
 * One agent at a time: every command that drives the service holds an flock on
 * <rundir>/agent.lock (a second one gets EBUSY naming the first). The device drops what an
 * agent preserved when it disconnects (v3 §2.4), so `preserve` holds its connection until
 * interrupted, and `update` takes --preserve TOKEN=FILE to preserve within its own session.
 */
import fs from 'node:fs';
import path from 'node:path';
import { defaultRundir, validName } from '../config.js';
import { structs } from '../device/client.js';
import { LuoError } from '../errors.js';
import { decode, toDts } from '../fdt/index.js';
import { Event, STATE_NAMES, parseEvent, stateName, toToken } from '../luo/abi.js';
import { IOCTL, REBOOT_SUCCESSOR, encodeLoadImage, encodeReboot } from '../uapi/protocol.js';
import { EXIT, alive, connect, devicePath, exitFor, lock, servicePid } from './agent.js';
import { update } from './update.js';

const USAGE = `usage: luo <command> [options] [args]

  state [--watch]              the service's state (normal, prepared, frozen, updated, undefined)
  prepare | cancel | finish    send a global event
  preserve TOKEN FILE          preserve FILE under TOKEN; holds the device until interrupted
  restore TOKEN [--out FILE]   restore TOKEN (after an update); copy its contents to FILE/stdout
  fd-state TOKEN [--incoming]  a preserved file's state
  fd-event TOKEN EVENT         per-file event: prepare, freeze, cancel, finish
  reboot [--successor] [-- CMD...]
                               FREEZE and exec the next image (default: the service's own command)
  update [--successor] [--preserve T=FILE]... [--timeout S] [--check CMD [--check-timeout S]]
         [--probation DURATION] [--takeover-timeout MS] [-- CMD...]
                               the whole update, a transaction until FINISH: PREPARE, load,
                               reboot, wait for the next version (UPDATED), check it, keep it on
                               probation, FINISH. If it fails before FINISH, the previous
                               version serves again (rolled back) and the report says why
                               --successor: start the next image first and hand over to it
                               (a shorter pause; the pid changes)
  rollback                     in UPDATED, before FINISH: give the update up, the previous
                               version resumes
  dump [FILE.dtb]              a DTB as DTS; without FILE, the service's handover trees (debug view)
  list [--root DIR]            the services under a rundir root (default: where --name puts them),
                               live or dead, with state and pid

options: --rundir DIR | --name NAME (the service's runtime directory), --json
exit codes: 0 ok, 1 failed, 2 usage, 3 malformed input, 4 no service, 5 timed out
`;

class UsageError extends Error {}

interface Opts { readonly rundir: string; json: boolean; flags: Map<string, string[]>; args: string[]; rest: string[] | null }

function parse(argv: string[]): Opts {
  const flags = new Map<string, string[]>();
  const args: string[] = [];
  let rest: string[] | null = null;
  const withValue = new Set(['rundir', 'name', 'root', 'out', 'preserve', 'timeout', 'check', 'check-timeout', 'probation', 'takeover-timeout']);
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

const out = (o: Opts, human: string, json: Record<string, unknown>): void => void process.stdout.write(o.json ? `${JSON.stringify(json)}\n` : `${human}\n`);

/** Connect to the service, as the one agent driving it (`what` names this command). */
function drive(o: Opts, what: string) {
  lock(o.rundir, what);
  return connect(o.rundir);
}

/** A duration: "500ms", "5s", "2m", or a bare number of seconds. */
function duration(v: string | undefined, what: string, def: number): number {
  if (v === undefined) return def;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(v);
  if (!m) throw new UsageError(`${what} takes a duration (500ms, 5s, 2m), not ${JSON.stringify(v)}`);
  return Math.round(Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm']));
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
  if (last === null && !fs.existsSync(o.rundir)) throw new LuoError('ERR_NO_SERVICE', `no runtime directory ${o.rundir} (is the service running? --rundir/--name)`);
  // The state file outlives its service: a dead one is said to be dead, not in its last state.
  const pid = servicePid(o.rundir);
  if (pid !== null && !alive(pid) && !o.flags.has('watch')) {
    if (o.json) process.stdout.write(`${JSON.stringify({ state: null, value: null, running: false, pid, last })}\n`);
    throw new LuoError('ERR_NO_SERVICE', `the service is not running (pid ${pid} is gone); its state file still says ${last ?? 'nothing'}`);
  }
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
  const c = drive(o, `luo ${Event[event].toLowerCase()}`);
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
  const c = drive(o, 'luo preserve');
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
      if (!fs.existsSync(devicePath(o.rundir))) done();
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
  const c = drive(o, 'luo restore');
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
  const c = drive(o, 'luo fd-state');
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
  const c = drive(o, 'luo fd-event');
  try {
    c.request(IOCTL.SET_FD_EVENT, structs.setFdEvent(toToken(t), parseEvent(ev)));
    out(o, `${ev} token ${t}: ok`, { token: t, event: ev, ok: true });
    return EXIT.OK;
  } finally {
    c.close();
  }
}

function cmdReboot(o: Opts): number {
  const c = drive(o, 'luo reboot');
  try {
    if (o.rest && o.rest.length) {
      c.request(IOCTL.LOAD_IMAGE, encodeLoadImage({ argv: [...o.rest], cwd: process.cwd(), env: Object.entries(process.env).filter(([k]) => !k.startsWith('LUO_HANDOVER')).map(([k, v]) => `${k}=${v}`) }));
    }
    const successor = o.flags.has('successor');
    c.request(IOCTL.REBOOT, encodeReboot({ flags: successor ? REBOOT_SUCCESSOR : 0 }));
    c.waitClosed();
    out(o, successor ? 'reboot: the service handed over to its successor (it commits at FINISH)' : 'reboot: the service exec\'d the next image in place', { ok: true });
    return EXIT.OK;
  } finally {
    c.close();
  }
}

function cmdUpdate(o: Opts): Promise<number> {
  const secs = (k: string, def: number): number => {
    const v = o.flags.get(k)?.[0];
    if (v === undefined) return def * 1000;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${k} takes seconds, not ${JSON.stringify(v)}`);
    return n * 1000;
  };
  const takeover = o.flags.get('takeover-timeout')?.[0];
  return update({
    rundir: o.rundir, json: o.json, successor: o.flags.has('successor'), command: o.rest && o.rest.length ? o.rest : null,
    preserve: o.flags.get('preserve') ?? [], timeoutMs: secs('timeout', 60), check: o.flags.get('check')?.[0] ?? null,
    checkTimeoutMs: secs('check-timeout', 30), probationMs: duration(o.flags.get('probation')?.[0], '--probation', 0),
    takeoverMs: takeover === undefined ? 0 : duration(takeover.match(/[a-z]$/) ? takeover : `${takeover}ms`, '--takeover-timeout', 0),
  });
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

/** `luo list`: every service under a rundir root: its name, state, pid, and whether it lives. */
function cmdList(o: Opts): number {
  const root = path.resolve(o.flags.get('root')?.[0] ?? process.env.LUO_RUNDIR_ROOT ?? path.dirname(defaultRundir('x')));
  let names: string[] = [];
  try {
    names = fs.readdirSync(root, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch { /* no root: no services */ }
  const rows = names.map((name) => {
    const rundir = path.join(root, name);
    const pid = servicePid(rundir);
    let state: string | null = null;
    try {
      state = fs.readFileSync(path.join(rundir, 'state'), 'utf8').trim();
    } catch { /* none */ }
    const device = fs.existsSync(devicePath(rundir));
    const live = pid !== null && alive(pid);
    return { name, rundir, pid, state, live, device };
  }).filter((r) => r.pid !== null || r.device || r.state !== null);
  if (o.json) process.stdout.write(`${JSON.stringify(rows)}\n`);
  else if (rows.length === 0) process.stdout.write(`no services under ${root}\n`);
  else {
    const w = Math.max(4, ...rows.map((r) => r.name.length));
    process.stdout.write(`${'NAME'.padEnd(w)}  ${'STATE'.padEnd(9)}  ${'PID'.padStart(7)}  LIVE  RUNDIR\n`);
    for (const r of rows) {
      process.stdout.write(`${r.name.padEnd(w)}  ${(r.live ? r.state ?? 'unknown' : 'dead').padEnd(9)}  ${String(r.pid ?? '-').padStart(7)}  ${r.live ? 'yes ' : 'no  '}  ${r.rundir}\n`);
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
      case 'rollback':
        return cmdEvent(o, Event.ROLLBACK);
      case 'dump':
        return cmdDump(o);
      case 'list':
        return cmdList(o);
      default:
        throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
    }
  } catch (e) {
    if (e instanceof UsageError || (e instanceof LuoError && e.code === 'ERR_USAGE')) {
      process.stderr.write(`luo: ${e.message.replace(/^ERR_USAGE: /, '')}\n${USAGE}`);
      return EXIT.USAGE;
    }
    if (e instanceof LuoError) {
      process.stderr.write(`luo: ${e.message}\n`);
      return exitFor(e.code);
    }
    process.stderr.write(`luo: ${(e as Error).message ?? String(e)}\n`);
    return EXIT.FAILED;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  if (process.argv[2] !== 'state' || !process.argv.includes('--watch')) setImmediate(() => process.exit(code));
});
