/*
 * cli/update: `luo update`, the whole update as one transaction, each phase shown live with
 * its elapsed time:
 *
 *   lock · check the state (a leftover PREPARED or UPDATED is named, with the command that
 *   clears it) · preserve · PREPARE · load the next image · REBOOT (the service hands over;
 *   the reply names the pid that will serve) · wait for the next version's device, watching
 *   its process (pidfd) · --check CMD until it exits 0 · --probation · FINISH (the commit).
 *
 * Unhappy paths, each reported in words with the failed version's exit status and last lines:
 *   - a failure before the handover (PREPARE, a successor that crashes, hangs or is stopped
 *     before it takes over, a FREEZE, an exec that cannot start): the service cancelled
 *     itself; the agent says why (GET_UPDATE) and exits 1;
 *   - the next version dies, gives up or is too slow after the handover, or fails the check
 *     or the probation: the previous version resumes (a successor's previous image, or the
 *     previous image exec'd again in place by luo's guard); the agent asks the next version
 *     to roll back where it still answers, waits for the previous version to serve, says so
 *     and exits 1 (an in-place rollback is finished for it: that commits the rollback);
 *   - nobody serves any more (the service process is gone): exit 1; no outcome within the
 *     deadlines: ETIMEDOUT, exit 5.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import type { DeviceClient } from '../device/client.js';
import { LuoError, NoAnswerError, errnoName } from '../errors.js';
import { Event, State, stateName, toToken } from '../luo/abi.js';
import * as sys from '../sys/index.js';
import { IOCTL, REBOOT_SUCCESSOR, decodeCarried, decodeUpdate, encodeLoadImage, encodeReboot, type CarriedEntry, type UpdateStatus } from '../uapi/protocol.js';
import { structs } from '../device/client.js';
import { EXIT, ProcessWatch, connect, exitFor, lock } from './agent.js';

export interface UpdateArgs {
  rundir: string;
  json: boolean;
  successor: boolean;
  /** The next image's command line (null: the service's own, read again from disk). */
  command: string[] | null;
  preserve: string[];
  /** How long the next version may take to come up (its device answering, UPDATED). */
  timeoutMs: number;
  check: string | null;
  checkTimeoutMs: number;
  probationMs: number;
  /** Successor: how long it may take to take the handover once the service has frozen. */
  takeoverMs: number;
}

interface Phase { phase: string; ms: number; ok: boolean; detail?: string }

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function getState(c: DeviceClient, timeoutMs?: number): number {
  return c.request(IOCTL.GET_STATE, structs.u32(), [], { timeoutMs }).struct.readUInt32LE(4);
}

/** What the serving image was handed over and what became of it (null: an older luo). */
function getCarried(c: DeviceClient): CarriedEntry[] | null {
  let size = 16384;
  for (let i = 0; i < 3; i++) {
    const b = Buffer.alloc(size);
    b.writeUInt32LE(size, 0);
    let r;
    try {
      const rep = c.request(IOCTL.GET_CARRIED, b, [], { allowFail: true });
      if (rep.result < 0) return null; // an older luo: ENOTTY
      r = decodeCarried(rep.struct);
    } catch {
      return null;
    }
    if (r.entries) return r.entries;
    size = r.need;
  }
  return null;
}

/** The report's line for what crossed: each server and its connections, what was closed at
 *  the freeze, refused by the next version, or released at FINISH. */
export function carriedSummary(entries: CarriedEntry[]): { line: string; warnings: string[] } {
  const parts: string[] = [];
  const warnings: string[] = [];
  for (const e of entries) {
    const name = e.label || `token ${e.token} (${e.compatible})`;
    if (e.released) {
      warnings.push(`${name} was released at FINISH: the next version never took it back (it listens there no more)`);
      continue;
    }
    const k = e.counts;
    if (k.connections !== undefined) {
      let t = `${name}: ${k.connections} connection${k.connections === 1 ? '' : 's'}`;
      if (k.upgraded) t += ` (${k.upgraded} upgraded: ${k.taken ?? 0} taken${k.refused ? `, ${k.refused} refused` : ''}${k.unclaimed ? `, ${k.unclaimed} unclaimed` : ''})`;
      parts.push(t);
      if (k.refused) warnings.push(`${name}: the next version refused ${k.refused} carried upgraded connection(s) (its code answered them itself: they are closed)`);
    } else if (e.restored) parts.push(name);
    if (e.closedAtFreeze) warnings.push(`${name}: ${e.closedAtFreeze} upgraded connection(s) were closed at the freeze (upgraded: 'close', or their close handshake was under way)`);
  }
  return { line: parts.join('; '), warnings };
}

function getUpdate(c: DeviceClient, timeoutMs?: number): UpdateStatus {
  const b = Buffer.alloc(8192);
  b.writeUInt32LE(b.length, 0);
  return decodeUpdate(c.request(IOCTL.GET_UPDATE, b, [], { timeoutMs }).struct);
}

/** How long the agent waits for one answer while it polls a version that should be coming up
 *  or coming back: one that took the connection and answers nothing is asked again, and said
 *  in the report, instead of holding the agent past its deadline. */
const ASK_MS = 5000;

/** The failed version's last stderr lines, for a report ("" when none). */
const lastLines = (u: UpdateStatus): string => {
  const l = u.stderr.filter((x) => x.trim() && !u.reason.includes(x)).slice(-3);
  return l.length ? ` [its last stderr: ${l.join(' | ')}]` : '';
};

function openForPreserve(file: string): number {
  try {
    return fs.openSync(file, 'r+');
  } catch {
    return fs.openSync(file, 'r');
  }
}

export async function update(a: UpdateArgs): Promise<number> {
  const t0 = performance.now();
  const phases: Phase[] = [];
  let phaseStart = t0;
  const step = (phase: string, ok = true, detail?: string): void => {
    const now = performance.now();
    phases.push({ phase, ms: Math.round((now - phaseStart) * 10) / 10, ok, ...(detail ? { detail } : {}) });
    if (!a.json) process.stdout.write(`${ok ? '✓' : '✗'} ${phase.padEnd(32)} ${(now - phaseStart).toFixed(1).padStart(8)} ms${detail ? `  ${detail}` : ''}\n`);
    phaseStart = now;
  };
  /** How it ended, for --json: 'committed', 'cancelled' or 'rolled-back', with the figures. */
  let outcome: Record<string, unknown> | null = null;
  const watches: ProcessWatch[] = [];
  const done = (ok: boolean, error?: LuoError): number => {
    for (const w of watches) w.close();
    if (a.json) process.stdout.write(`${JSON.stringify({ ok, totalMs: Math.round(performance.now() - t0), phases, ...(outcome ? { outcome } : {}), ...(error ? { error: error.message, code: error.code } : {}) })}\n`);
    else if (ok) process.stdout.write(`update done in ${(performance.now() - t0).toFixed(1)} ms\n`);
    else process.stderr.write(`luo: update failed: ${error!.message.replace(/^ERR_UPDATE_FAILED: /, '')}\n`);
    return ok ? EXIT.OK : exitFor(error?.code);
  };
  /** The update failed (the previous version serves): the errno of the cause first. */
  const failed = (msg: string, code = 'ERR_UPDATE_FAILED', errno?: string): LuoError => new LuoError(code, errno ? `${errno}: ${msg}` : msg);

  try {
    lock(a.rundir, 'luo update');
    let c = connect(a.rundir);
    const oldPid = sys.peerCred(c.fd).pid;
    const st = getState(c);
    const hint = `--rundir ${a.rundir}`;
    if (st === State.PREPARED) throw failed(`the service is already PREPARED: an earlier update was neither finished nor cancelled. Run \`luo cancel ${hint}\`, then update again`, 'EBUSY');
    if (st === State.UPDATED) throw failed(`the service is UPDATED: its last update was never finished. Run \`luo finish ${hint}\` to keep the version it runs now (or \`luo rollback ${hint}\` to go back), then update again`, 'EBUSY');
    if (st === State.FROZEN) throw failed('the service is FROZEN: it is in the middle of an update', 'EBUSY');
    if (st === State.UNDEFINED) throw failed('live update is disabled in this service (LUO_ENABLE=0)', 'EOPNOTSUPP');

    for (const spec of a.preserve) {
      const eq = spec.indexOf('=');
      if (eq < 0) throw new LuoError('ERR_USAGE', `--preserve takes TOKEN=FILE, not ${spec}`);
      const fd = openForPreserve(spec.slice(eq + 1));
      try {
        c.request(IOCTL.FD_PRESERVE, structs.fdPreserve(toToken(spec.slice(0, eq))), [fd]);
      } finally {
        fs.closeSync(fd);
      }
      step(`preserve ${spec}`);
    }
    try {
      c.request(IOCTL.SET_EVENT, structs.u32(Event.PREPARE));
    } catch (e) {
      let why = (e as Error).message;
      try {
        const u = getUpdate(c);
        if (u.outcome === 'cancelled' && u.reason.startsWith('PREPARE failed: ')) why = `${(e as LuoError).code}: ${u.reason.slice('PREPARE failed: '.length)}`;
      } catch { /* an older luo: the errno alone */ }
      step('prepare', false, why);
      const still = getState(c) === State.NORMAL;
      throw failed(`PREPARE failed (${why.replace(/^[A-Z0-9_]+: /, '')}); ${still ? 'nothing changed: the previous version serves' : `the service is ${stateName(getState(c))}`}`, 'ERR_UPDATE_FAILED', (e as LuoError).code);
    }
    step('prepare');
    if (a.command?.length) {
      c.request(IOCTL.LOAD_IMAGE, encodeLoadImage({ argv: a.command, cwd: process.cwd() }));
      step('load next image', true, a.command.join(' '));
    }

    // The handover. How long the next version has to commit, from there: up, checked, on
    // probation, finished; past that the service (or the guard) rolls it back by itself.
    const commitMs = a.timeoutMs + (a.check ? a.checkTimeoutMs : 0) + a.probationMs + 15_000;
    const label = a.successor ? 'successor up, freeze + handover' : 'freeze + exec';
    let nextPid: number;
    const cancelled = (e: LuoError): LuoError => {
      let why = e.message;
      let stillNormal = false;
      try {
        const u = getUpdate(c);
        if (u.outcome === 'cancelled' && u.reason) why = `${u.reason}${lastLines(u)}`;
        stillNormal = getState(c) === State.NORMAL;
      } catch { /* the connection went with it */ }
      step(label, false, why);
      outcome = { outcome: 'cancelled', reason: why, serving: stillNormal };
      if (stillNormal) step('cancelled', true, 'the service serves the previous version, nothing was given up');
      return failed(`${why}; ${stillNormal ? 'cancelled: the previous version serves' : 'the service did not say it cancelled'}`, 'ERR_UPDATE_FAILED', e.code);
    };
    try {
      const r = c.request(IOCTL.REBOOT, encodeReboot({ flags: a.successor ? REBOOT_SUCCESSOR : 0, commitMs, takeoverMs: a.takeoverMs, readyMs: a.timeoutMs }));
      nextPid = r.struct.length >= 20 && r.struct.readInt32LE(16) > 0 ? r.struct.readInt32LE(16) : oldPid;
    } catch (e) {
      throw cancelled(e as LuoError);
    }
    try {
      c.waitClosed();
    } catch (e) {
      throw cancelled(e as LuoError); // the handover failed after REBOOT was accepted
    }
    step(label, true, a.successor ? `successor pid ${nextPid}` : `pid ${nextPid}`);
    c.close();

    // From here on the update is a transaction until FINISH.
    // Watched by pidfd (ProcessWatch): in place, a rollback exec from the guard's watchdog
    // thread shows the pid as a zombie in /proc for a moment.
    const next = new ProcessWatch(nextPid);
    watches.push(next);
    const old = a.successor ? new ProcessWatch(oldPid) : next;
    if (old !== next) watches.push(old);
    const nextGone = (): boolean => next.gone;
    const deadline = performance.now() + a.timeoutMs;
    const hardDeadline = performance.now() + commitMs + 15_000;

    /** Wait for the previous version to serve again and say why; the error to raise. `ours`:
     *  the agent itself ended the next version (too slow, a failed check): its reason comes
     *  first, the service's (what it saw: a kill) after. */
    const rolledBack = async (what: string, ours: boolean | 'and theirs' = false): Promise<LuoError> => {
      for (;;) {
        try {
          c = connect(a.rundir);
          const peer = sys.peerCred(c.fd).pid;
          const u = getUpdate(c, ASK_MS);
          if (u.outcome === 'rolled-back' && (!a.successor || peer === oldPid)) {
            let note = '';
            if (getState(c, ASK_MS) === State.UPDATED) {
              // In place: the previous image booted from the same handover; finishing it
              // makes the rollback final.
              c.request(IOCTL.SET_EVENT, structs.u32(Event.FINISH));
              note = ', finished';
              const u2 = getUpdate(c);
              u.lost = u2.lost;
            }
            const conns = u.resumed || u.lost ? `; ${u.resumed ? `${u.resumed} connections resumed, ` : ''}${u.lost} closed because the failed version had used them` : '';
            const reason = ours === 'and theirs' && u.reason ? `${what}: ${u.reason}${lastLines(u)}` : ours ? what : `${u.reason || what}${lastLines(u)}`;
            step('rolled back', true, `the previous version serves again (pid ${peer}${note})${conns}`);
            outcome = { outcome: 'rolled-back', reason, pid: peer, resumed: u.resumed, lost: u.lost, status: u.status };
            return failed(`${reason}; rolled back: the previous version serves (pid ${peer})`, 'ERR_UPDATE_FAILED', u.errno ? errnoName(u.errno) : undefined);
          }
        } catch { /* not up yet */ }
        c?.close();
        if (old.gone && !(a.successor && !next.gone)) throw failed(`${what}, and the service is gone: no version serves (pid ${oldPid} is not running)`);
        if (performance.now() > hardDeadline) throw failed(`${what}; the previous version has not come back within the deadline`, 'ETIMEDOUT');
        await sleep(10);
      }
    };

    // Up: the next version's device answers, UPDATED.
    let killed = false;
    /** The last poll's connection was taken and not answered (why, for the report). */
    let silent: string | null = null;
    for (;;) {
      if (a.successor && nextGone()) {
        step('next image up', false, 'the successor exited after it took over');
        throw await rolledBack('the successor exited after it took over');
      }
      if (!a.successor && next.gone) throw failed(`the service process (pid ${nextPid}) is gone: no version serves`);
      let up = false;
      try {
        c = connect(a.rundir);
        const peer = sys.peerCred(c.fd).pid;
        const ask = Math.max(1000, Math.min(ASK_MS, deadline - performance.now()));
        const u = getUpdate(c, ask);
        if (u.outcome === 'rolled-back') {
          c.close();
          step('next image up', false, `${u.reason}${lastLines(u)}`);
          throw await rolledBack(u.reason);
        }
        const s = getState(c, ask);
        silent = null;
        if ((!a.successor || peer === nextPid) && s === State.UPDATED) up = true;
        else if (!a.successor && s === State.NORMAL) throw failed(`the next image booted ${stateName(s)}, not updated: the handover did not reach it`, 'EIO');
      } catch (e) {
        if (e instanceof NoAnswerError) silent = e.message.replace(/^ETIMEDOUT: /, '');
        else if (e instanceof LuoError && (e.code === 'ERR_UPDATE_FAILED' || e.code === 'EIO' || e.code === 'ETIMEDOUT')) throw e;
      }
      if (up) break;
      c?.close();
      if (performance.now() > deadline && !killed) {
        killed = true;
        step('next image up', false, `not up within ${a.timeoutMs / 1000} s${silent ? ` (${silent})` : ''}`);
        if (a.successor) {
          // Too slow: end it; its previous image resumes as soon as it is gone.
          try {
            process.kill(nextPid, 'SIGKILL');
          } catch { /* gone already */ }
          throw await rolledBack(`the successor was too slow: its device was not up within ${a.timeoutMs / 1000} s; it was killed`, true);
        }
        // In place, the guard's deadline brings the previous image back.
        throw await rolledBack(`the next version did not come up within ${a.timeoutMs / 1000} s`);
      }
      await sleep(10);
    }
    step('next image up (updated)');
    /** The next version fails a check or its probation: ask it to give up, then report. */
    const giveUp = async (what: string): Promise<LuoError> => {
      try {
        c.request(IOCTL.SET_EVENT, structs.u32(Event.ROLLBACK), [], { allowFail: true });
      } catch { /* it went at once */ }
      c.close();
      if (a.successor) {
        // A successor that hangs does not go by itself: its previous image is waiting for it.
        const until = performance.now() + 2000;
        while (!nextGone() && performance.now() < until) await sleep(10);
        if (!nextGone()) {
          try {
            process.kill(nextPid, 'SIGKILL');
          } catch { /* gone */ }
        }
      }
      return rolledBack(what, true);
    };

    // Nothing may be dropped silently: upgraded connections the next version left unclaimed
    // (nothing in it took them back) roll the update back; the previous version still has them.
    const carried = getCarried(c);
    const unclaimed = (carried ?? []).filter((e) => (e.counts.unclaimed ?? 0) > 0);
    if (unclaimed.length) {
      const what = unclaimed.map((e) => `${e.counts.unclaimed} on ${e.label || `token ${e.token}`}`).join(', ');
      step('carried connections taken', false, `${what} unclaimed`);
      throw await giveUp(`the next version left upgraded connections unclaimed (${what}): nothing in it took them back (does it still create its WebSocketServer / socket.io server on that server?)`);
    }

    if (a.check) {
      const until = performance.now() + a.checkTimeoutMs;
      let last = '';
      for (;;) {
        if (nextGone()) throw await rolledBack('the next version exited during its check');
        const r = await runCheck(a.check, { LUO_RUNDIR: a.rundir, LUO_PID: String(nextPid) });
        if (r.code === 0) break;
        last = r.output.trim().split('\n').slice(-2).join(' | ');
        if (performance.now() > until) {
          step('check', false, `\`${a.check}\` exited ${r.code}${last ? `: ${last}` : ''}`);
          throw await giveUp(`the check \`${a.check}\` kept failing for ${a.checkTimeoutMs / 1000} s (exit status ${r.code}${last ? `: ${last}` : ''})`);
        }
        await sleep(200);
      }
      step('check', true, a.check);
    }

    if (a.probationMs > 0) {
      const until = performance.now() + a.probationMs;
      while (performance.now() < until) {
        // In place, the next image's end closes this connection (the guard execs the previous one).
        const hup = (sys.poll([c.fd], 0)[0] ?? 0) & (sys.POLLHUP | sys.POLLERR | sys.POLLIN);
        if (nextGone() || hup) {
          c.close();
          step('probation', false, `the next version did not last ${a.probationMs / 1000} s`);
          throw await rolledBack(`the next version exited during its probation (${((performance.now() - until + a.probationMs) / 1000).toFixed(1)} s into ${a.probationMs / 1000} s)`, 'and theirs');
        }
        await sleep(20);
      }
      step('probation', true, `${a.probationMs / 1000} s`);
    }

    try {
      c.request(IOCTL.SET_EVENT, structs.u32(Event.FINISH));
    } catch (e) {
      step('finish', false, (e as Error).message);
      if ((e as LuoError).code === 'ETIMEDOUT') throw failed(`FINISH did not commit: ${(e as Error).message}`, 'ETIMEDOUT');
      throw e;
    }
    let detail = 'committed';
    try {
      const u = getUpdate(c);
      if (u.outcome === 'committed') detail = `committed (${(u.writtenBack / 1024).toFixed(0)} KiB of changed memory written back)`;
    } catch { /* an older luo */ }
    step('finish', true, detail);
    const after = getCarried(c);
    if (after?.length) {
      const { line, warnings } = carriedSummary(after);
      if (line) step('carried', true, line);
      for (const w of warnings) step('not carried', false, w);
    }
    outcome = { outcome: 'committed', pid: nextPid, ...(after ? { carried: after } : {}) };
    c.close();
    return done(true);
  } catch (e) {
    const err = e instanceof LuoError ? e : new LuoError('EIO', (e as Error).message);
    if (err.code === 'ERR_USAGE') throw err;
    return done(false, err);
  }
}

/** Run a check command (sh -c), its output captured; its exit status. */
function runCheck(cmd: string, env: Record<string, string>): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', cmd], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('error', (e) => resolve({ code: 127, output: e.message }));
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), output }));
  });
}

