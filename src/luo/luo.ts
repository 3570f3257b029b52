/*
 * luo/luo: the Live Update Orchestrator for one process (reference §2-§4; the kernel's
 * luo_core.c): boot, the transitions, and the service-facing API. The state and its rules are
 * lifecycle.ts; the subsystems and their tree subsystems.ts; files and handlers files.ts; how
 * the next image gets everything, src/handover.
 *
 * States: UNDEFINED (disabled) · NORMAL · PREPARED · FROZEN · UPDATED.
 *
 *   boot       no "LUO" subtree handed over → NORMAL; a valid "luo-v1" tree → UPDATED;
 *              a corrupt one → fatal (exit 70), or NORMAL when configured to boot cold (never
 *              in a successor: the previous image still serves).
 *   PREPARE    NORMAL → PREPARED. Subsystems prepare in registration order (the internal
 *              "file-descriptors" subsystem last, as the kernel's late_initcall puts it).
 *              A failure cancels the subsystems before the failing one, in forward order,
 *              and leaves NORMAL. On success the payloads are written to the "luo-v1" tree,
 *              the state is PREPARED, then KHO is finalized (if that fails the error is
 *              returned and the state stays PREPARED, as v3). Wrong state: EINVAL.
 *   FREEZE     PREPARED → FROZEN, only from reboot() (or the selftest hook). KHO is un-finalized
 *              while the freeze callbacks run (so they can preserve their blackout-window
 *              state, as upstream from v6), then finalized again. A failure cancels every
 *              subsystem, aborts KHO, frees the tree and returns to NORMAL (v3 leaked the
 *              subsystems after the failing one).
 *   CANCEL     PREPARED/FROZEN → NORMAL: abort KHO first, then cancel all subsystems in
 *              registration order and free the tree. From any other state: ENOENT (from
 *              kho_abort, as v3), EOPNOTSUPP when disabled.
 *   FINISH     UPDATED → NORMAL: finish(data) for every subsystem that had a payload, files
 *              finish (reclaimed=false for tokens never restored), then every handed-over page
 *              nobody restored is released. Wrong state: EINVAL. Never fails otherwise.
 *   reboot     through a transport (src/handover): exec in place, or a pre-started successor
 *              (PREPARED only). PREPARED: the transport begins (a successor is started, and sent
 *              what can go early), FREEZE, verify, hand over. Any other state: exec without a
 *              LUO tree (FROZEN: with the frozen one). Anything failing before the handover (the
 *              successor dies or is too slow, a FREEZE fails, the exec fails) cancels back to
 *              NORMAL and raises the error; the service keeps serving.
 *   the transaction (luo's, not v3's: docs/lifecycle.md) FINISH is the commit point. Until the
 *              next version's FINISH the update can roll back: a successor's previous image
 *              keeps everything and waits; if the successor dies, is stopped, gives up
 *              (ROLLBACK) or has not finished by the commit deadline, this image resumes:
 *              CANCEL, every connection the successor left alone carries on, those it touched
 *              are closed and counted, and reboot() raises why. In place, luo's guard in the
 *              next image brings this image back (exec'd again with the same handover: it boots
 *              UPDATED, lastUpdate says why). Until FINISH the next version maps the arena
 *              copy-on-write: the previous one resumes with its memory as it was at the freeze.
 *
 * Transitions run one at a time (queued, like the kernel's rwsem writers). While one runs,
 * register/unregister/preserve/unpreserve raise EBUSY instead of blocking.
 */
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { resolveConfig, trace, type LuoConfig } from '../config.js';
import { HandoverError, LuoError, fail } from '../errors.js';
import {
  discard, openTransport, pendingKind, receive, selfImage, type FdRef, type HandedOver, type Image, type Incoming, type Outcome, type Transport,
} from '../handover/index.js';
import { Arena, Kho, type KhoOptions } from '../kho/index.js';
import { panic } from '../panic.js';
import * as sys from '../sys/index.js';
import { StateStore, type KeepSpec, type MapOptions, type PreservedMap } from '../state/index.js';
import { HANDOVER_ENV } from '../uapi/handover.js';
import { STATE_SUBSYSTEM } from '../uapi/state.js';
import { Event, FILES_SUBSYSTEM, State, toToken } from './abi.js';
import { DEFAULT_TIMEOUTS, type Timeouts } from './callbacks.js';
import type { FileHandler } from './file-handler.js';
import { Files } from './files.js';
import { Lifecycle } from './lifecycle.js';
import { Subsystems, type Subsystem } from './subsystems.js';

export type { Subsystem };

export interface RebootOpts {
  /** Called right before the handover (the exec, or the handover to a successor), with the
   *  pid that will serve the next version. */
  beforeExec?: (pid: number) => void;
  /** Hand over to a pre-started successor process instead of exec'ing in place. */
  successor?: boolean;
  /** Successor mode: how long it may take to start and be ready (default: the boot timeout). */
  successorTimeoutMs?: number;
  /** Successor mode: how long it may take to take the handover once this image has frozen
   *  (default: timeouts.takeover, 1 s). */
  takeoverTimeoutMs?: number;
  /** How long the next version has, from the handover, to FINISH (default: timeouts.commit). */
  commitTimeoutMs?: number;
  /** In place: how long the next image has to be up, its control device started (default:
   *  the commit timeout). */
  upTimeoutMs?: number;
  /** Successor mode: called with its pid once it has taken everything (this image then waits
   *  for its FINISH, serving nothing). */
  afterHandover?: (pid: number) => void;
}

/** How the last update of this service ended, as this image knows it. */
export interface UpdateReport {
  /** committed: FINISH made it final; rolled-back: the next version failed after the
   *  handover and the previous one serves again; cancelled: it failed before the handover
   *  (nothing was given up). */
  outcome: 'committed' | 'rolled-back' | 'cancelled';
  /** Transport of that update. */
  mode: 'exec' | 'successor';
  /** Why it rolled back (the failed version's own words where its guard sent them). */
  reason: string;
  /** errno name for the failure (ECHILD crashed, ETIMEDOUT too slow or stopped, ECANCELED gave up). */
  code: string | null;
  /** The failed version's exit status and last stderr lines, when known. */
  status: number | null;
  stderr: string[];
  /** Connections that carried on, and those closed because the failed version had used them. */
  resumed: number;
  lost: number;
  /** Commit: bytes of the arena the next version had changed, written back at FINISH. */
  writtenBack: number;
}

export interface LuoOptions extends Partial<LuoConfig> {
  timeouts?: Partial<Timeouts>;
  /** File handlers registered before the handover is read (so their files are checked at boot). */
  handlers?: FileHandler[];
  /** Successor mode: called right before this image tells the running one it is ready (the
   *  running one then freezes): the last start-up work that must not overlap the pause. */
  beforeHandover?: () => void;
  /** Successor mode: called once the running image has sent what it can before its freeze,
   *  right before it freezes: settle what would otherwise land in the pause. */
  settle?: () => void;
  /** Successor mode: the connections among the fds sent early (this process's numbers), to
   *  build their sockets before the freeze (index.ts: handlers/prebuilt.ts). */
  prebuild?: (fds: number[]) => void;
  /** Successor mode, before the freeze: memory of the handover the running image named for
   *  reading ahead (ahead-v1), its arena address and bytes (index.ts: a server's base block,
   *  handlers/connection.ts). True when it was read. Without it, nothing is read ahead. */
  ahead?: (addr: number, bytes: Uint8Array) => boolean;
  /** The running image, after it sent `n` fds early to a successor and before it freezes:
   *  run the freeze's code once on made-up input (index.ts: warm.ts). */
  warm?: (n: number) => Promise<void>;
}

export class Luo extends EventEmitter {
  readonly config: LuoConfig;
  #warm: ((n: number) => Promise<void>) | null = null;
  /** Preserved memory (KHO): preserve, allocate, view, subtrees (docs/kho.md). */
  readonly kho: Kho;
  readonly files: Files;
  timeouts: Timeouts;
  readonly #life: Lifecycle;
  readonly #subs: Subsystems;
  readonly #incoming: Incoming | null;
  #lastUpdate: UpdateReport | null = null;
  /** This image was brought back in place: the report of that rollback. */
  #broughtBack: UpdateReport | null = null;
  /** The reboot under way ended in a rollback (its report is the last update's). */
  #resumed = false;

  private constructor(config: LuoConfig, kho: Kho, incoming: Incoming | null, timeouts: Timeouts) {
    super();
    this.config = config;
    this.kho = kho;
    this.timeouts = timeouts;
    this.#incoming = incoming;
    this.#life = new Lifecycle(config.enabled, (to, from) => this.emit('state', to, from));
    this.files = new Files({ life: this.#life, kho, incoming, timeouts: () => this.timeouts, fatal: (e) => this.#fatal(e), rollback: incoming?.rolledBack != null });
    const back = incoming?.rolledBack;
    if (back) {
      this.#lastUpdate = { outcome: 'rolled-back', mode: 'exec', reason: back.reason, code: null, status: back.status, stderr: back.stderr, resumed: 0, lost: 0, writtenBack: 0 };
      this.#broughtBack = this.#lastUpdate;
    }
    const files = this.files;
    this.#subs = new Subsystems(this.#life, kho, () => this.timeouts, {
      name: FILES_SUBSYSTEM,
      prepare: () => files.subsystemPrepare(),
      freeze: () => files.subsystemFreeze(),
      cancel: () => files.subsystemCancel(),
      finish: () => files.subsystemFinish(),
    });
  }

  /** Boot luo in this image: adopt the handover if there is one. */
  static boot(opts: LuoOptions = {}): Luo {
    const config = resolveConfig(opts);
    const env = process.env;
    const raw = env[HANDOVER_ENV];
    const kind = pendingKind(env);
    const khoOpts: KhoOptions = { arenaSize: config.arenaSize, enabled: config.enabled, debugDir: config.khoDebug ? path.join(config.rundir, 'debug') : undefined };
    let incoming: Incoming | null = null;
    let kho: Kho;
    try {
      let premapped: Arena | null = null;
      incoming = receive(env, {
        beforeHello: opts.beforeHandover,
        // Sent before the freeze: map the arena while the previous image still serves,
        // copy-on-write (it may resume until this image's FINISH).
        presend: ({ arena, regions }) => {
          if (arena < 0) return;
          premapped = Arena.adopt(arena, { private: true });
          premapped.pin(regions);
        },
        settle: opts.settle,
        prebuild: opts.prebuild,
        ahead: opts.ahead ? (regions) => {
          let n = 0;
          for (const [addr, size] of regions) {
            try {
              if (premapped && opts.ahead!(addr, (premapped as Arena).view(addr, size))) n++;
            } catch { /* not in the arena: read at boot, or refused there */ }
          }
          return n;
        } : undefined,
      });
      kho = incoming ? Kho.adopt(incoming.entry, { ...khoOpts, premapped, private: incoming.transactional }) : Kho.create(khoOpts);
    } catch (e) {
      void incoming?.release();
      const msg = e instanceof LuoError ? e.message : `ERR_HANDOVER: ${(e as Error).message}`;
      // A successor without its handover must never serve: the previous image still does.
      if (kind === 'successor' || config.onCorrupt !== 'cold') panic(msg);
      process.emitWarning(`luo: ignoring the handover and booting cold: ${msg}`);
      discard(raw);
      incoming = null;
      kho = Kho.create(khoOpts);
    }
    trace('boot: kho adopted');
    const luo = new Luo(config, kho, incoming, { ...DEFAULT_TIMEOUTS, ...opts.timeouts });
    luo.#warm = opts.warm ?? null;
    if (config.enabled) for (const h of opts.handlers ?? []) luo.registerFileHandler(h);
    luo.#boot(kind === 'successor');
    trace(`boot: luo ${luo.stateName}`);
    return luo;
  }

  #boot(successor: boolean): void {
    let state = State.NORMAL;
    if (!this.config.enabled) state = State.UNDEFINED;
    else {
      try {
        const got = this.#subs.adopt();
        if (got) {
          state = State.UPDATED;
          if (got.files !== 0n) this.files.boot(got.files, got.filesChecksum);
        }
      } catch (e) {
        if (!(e instanceof HandoverError) || this.config.onCorrupt !== 'cold' || successor) this.#fatal(e);
        process.emitWarning(`luo: ignoring the LUO handover and booting NORMAL: ${(e as Error).message}`);
        // Nothing of the previous image may stay open: this image binds its own sockets.
        discard(this.#incoming?.entry, { also: this.files.inheritedFds(), keepArena: true });
        this.#subs.forget();
        this.kho.releaseUnclaimed();
        // No previous version can come back now: this image's memory is the arena's.
        this.kho.commit();
      }
    }
    this.#life.start(state, this.config.stateFile ? { rundir: this.config.rundir, deferred: this.#incoming?.received ?? false } : null);
  }

  /** A fatal error (the kernel's panic): one line on stderr, exit 70. */
  #fatal(e: unknown): never {
    panic(e instanceof LuoError ? e.message : `ERR_HANDOVER: ${(e as Error).message}`);
  }

  // ---------------------------------------------------------------------------------------
  // state

  get state(): State {
    return this.#life.state;
  }

  get stateName(): string {
    return this.#life.name;
  }

  /** Live updates this service has gone through (carried across updates). */
  get liveupdateNumber(): number {
    return this.#subs.number;
  }

  /** How the last update ended, as far as this image knows (null: none did here yet). */
  get lastUpdate(): UpdateReport | null {
    const u = this.#lastUpdate;
    // Brought back in place: the connections the failed image had used were left out as they
    // were restored.
    if (u && u === this.#broughtBack) return { ...u, lost: this.files.lostAtRollback };
    return u;
  }

  /** The previous version can still resume: this update rolls back if this image fails
   *  before FINISH (and its arena is copy-on-write until then). */
  get transactional(): boolean {
    return this.#incoming?.transactional ?? false;
  }

  get stateFilePath(): string | null {
    return this.#life.stateFilePath;
  }

  // ---------------------------------------------------------------------------------------
  // events

  /** SET_EVENT: PREPARE, FINISH, CANCEL, ROLLBACK (luo's). FREEZE is EINVAL (only reboot
   *  freezes); unknown EOPNOTSUPP. */
  setEvent(event: Event | number): Promise<void> {
    switch (event) {
      case Event.PREPARE:
        return this.prepare();
      case Event.FINISH:
        return this.finish();
      case Event.CANCEL:
        return this.cancel();
      case Event.ROLLBACK:
        return this.rollback('the agent asked for a rollback');
      case Event.FREEZE:
        return Promise.reject(fail('EINVAL', 'FREEZE cannot be requested: it happens only at reboot'));
      default:
        return Promise.reject(fail('EOPNOTSUPP', `unknown event ${event}`));
    }
  }

  prepare(): Promise<void> {
    return this.#life.exclusive('PREPARE', async () => {
      this.#life.requireEnabled();
      if (this.state !== State.NORMAL) throw fail('EINVAL', `PREPARE needs state normal, not ${this.stateName}`);
      trace('prepare: start');
      // In place, the guard of the next image brings this one back if it fails before FINISH:
      // the tree says how to run it.
      this.#subs.previousImage = previousImage();
      try {
        await this.#subs.prepare();
      } catch (err) {
        // An agent asks why (GET_UPDATE): the errno alone does not say.
        const e = err as LuoError;
        this.#lastUpdate = { outcome: 'cancelled', mode: 'exec', reason: `PREPARE failed: ${e.message?.replace(/^[A-Z0-9_]+: /, '') ?? String(err)}`, code: e.code ?? null, status: null, stderr: [], resumed: 0, lost: 0, writtenBack: 0 };
        throw err;
      }
      this.#life.set(State.PREPARED);
      this.kho.finalize(); // v3: a failure here is returned, and the state stays PREPARED
      trace('prepare: done');
    });
  }

  /** FREEZE (reboot and the selftest hook only). */
  #freeze(): Promise<void> {
    return this.#life.exclusive('FREEZE', async () => {
      if (this.state !== State.PREPARED) throw fail('EINVAL', `FREEZE needs state prepared, not ${this.stateName}`);
      if (this.kho.finalized) this.kho.abort();
      try {
        trace('freeze: start');
        await this.#subs.freeze(trace);
        trace('freeze: tree written');
        this.kho.finalize();
        trace('freeze: kho finalized');
      } catch (err) {
        await this.#rollback();
        throw err;
      }
      this.#state?.frozen(); // before FROZEN is said: a listener's write is refused already
      this.#life.set(State.FROZEN);
      trace('freeze: frozen');
    });
  }

  cancel(): Promise<void> {
    return this.#life.exclusive('CANCEL', async () => {
      this.#life.requireEnabled();
      if (this.state !== State.PREPARED && this.state !== State.FROZEN) {
        if (!this.kho.finalized) throw fail('ENOENT', `nothing to cancel in state ${this.stateName} (KHO is not finalized)`);
        throw fail('EINVAL', `CANCEL needs state prepared or frozen, not ${this.stateName}`);
      }
      await this.#rollback();
    });
  }

  finish(): Promise<void> {
    return this.#life.exclusive('FINISH', async () => {
      this.#life.requireEnabled();
      if (this.state !== State.UPDATED) throw fail('EINVAL', `FINISH needs state updated, not ${this.stateName}`);
      // The commit point: the previous version lets go (a successor's previous image exits; an
      // exec'd image's guard is disarmed), then this image's writes become the arena's.
      const transactional = this.#incoming?.transactional ?? false;
      await this.#incoming?.commit(this.timeouts.finish);
      trace('finish: committed');
      const writtenBack = this.kho.commit();
      trace(`finish: ${writtenBack} bytes written back`);
      if (transactional) {
        this.#lastUpdate = { outcome: 'committed', mode: this.#incoming!.kind, reason: '', code: null, status: null, stderr: [], resumed: 0, lost: 0, writtenBack };
      }
      await this.#subs.finish();
      const leaked = this.kho.releaseUnclaimed();
      if (leaked > 0) process.emitWarning(`luo: FINISH released ${leaked} bytes of handed-over memory that no subsystem restored`, { code: 'LUO_UNCLAIMED_MEMORY' });
      this.#life.set(State.NORMAL);
      // A successor wrote its first state off the main thread; FINISH is over once the file
      // says what the state is.
      await this.#life.settled();
      // Stop watching the handed-over fds; a successor lets the previous image exit now (it
      // waited, so that tearing down its memory took nothing from this image's first moments).
      await this.#incoming?.release();
    });
  }

  /**
   * ROLLBACK (luo's event): in UPDATED before FINISH, give up this update; the previous
   * version resumes (successor: this process tells it and exits; in place: the previous image
   * is exec'd again). EINVAL when nothing can resume (FINISH committed, or the previous image
   * did not keep a way back). Resolves only when it could not.
   */
  async rollback(reason = 'rolled back'): Promise<void> {
    this.#life.requireEnabled();
    if (this.state !== State.UPDATED) throw fail('EINVAL', `ROLLBACK needs state updated, not ${this.stateName}`);
    const incoming = this.#incoming;
    if (!incoming?.canRollBack) throw fail('EINVAL', 'nothing to roll back to: the previous version is gone (FINISH committed this update, or it was not started by a luo that keeps a way back)');
    incoming.rollback(`rolled back: ${reason}`);
    throw fail('EIO', 'the previous version could not be brought back');
  }

  /** Back to NORMAL from PREPARED/FROZEN (CANCEL, a failed FREEZE, a failed exec): KHO is
   *  aborted first, so cancel callbacks can unpreserve; then every subsystem is cancelled in
   *  registration order and the tree is freed. */
  async #rollback(): Promise<void> {
    if (this.kho.finalized) this.kho.abort();
    this.#subs.previousImage = null;
    await this.#subs.cancel();
    this.#life.set(State.NORMAL);
  }

  /** Address of the outgoing "luo-v1" tree (null when not PREPARED/FROZEN). For tests and dump. */
  get outgoingTreeAddress(): number | null {
    return this.#subs.treeAddress;
  }

  /**
   * reboot(LINUX_REBOOT_CMD_KEXEC): in PREPARED, FREEZE and hand over to the next image
   * (default: this service's own command line, read again from disk): exec'd in place, or a
   * pre-started successor (`successor: true`, PREPARED only, else EINVAL). Returns only by
   * throwing: whatever fails before the point of no return cancels back to NORMAL, and the
   * error is raised (a successor that dies or is too slow: ECHILD, ETIMEDOUT).
   */
  async reboot(image: Image = selfImage(), opts: RebootOpts = {}): Promise<never> {
    try {
      return await this.#reboot(image, opts);
    } catch (err) {
      // Anything but a rollback (which said so itself) failed before the handover: cancelled.
      if (this.#lastUpdate?.outcome !== 'rolled-back' || !this.#resumed) {
        const e = err as LuoError;
        this.#lastUpdate = { outcome: 'cancelled', mode: opts.successor ? 'successor' : 'exec', reason: e.message?.replace(/^[A-Z0-9_]+: /, '') ?? String(err), code: e.code ?? null, status: null, stderr: [], resumed: 0, lost: 0, writtenBack: 0 };
      }
      this.#resumed = false;
      throw err;
    }
  }

  async #reboot(image: Image, opts: RebootOpts): Promise<never> {
    const kind = opts.successor ? 'successor' : 'exec';
    if (kind === 'successor' && this.state !== State.PREPARED) throw fail('EINVAL', `a successor reboot needs state prepared, not ${this.stateName}`);
    // PREPARE and the successor's start (a posix_spawn: a few ms) each hold the event loop:
    // serve between them (a loop turn with a poll), so that clients wait for the longer of
    // the two, not for both.
    if (kind === 'successor') await new Promise((r) => setImmediate(() => setImmediate(r)));
    let transport: Transport;
    try {
      transport = openTransport(kind, image, {
        readyTimeoutMs: opts.successorTimeoutMs ?? this.timeouts.boot,
        freezeTimeoutMs: opts.takeoverTimeoutMs ?? this.timeouts.takeover,
        commitTimeoutMs: opts.commitTimeoutMs ?? this.timeouts.commit,
        ...(opts.upTimeoutMs ? { upTimeoutMs: opts.upTimeoutMs } : {}),
        successorIdle: this.config.successorIdle,
      });
    } catch (err) {
      if (this.state === State.PREPARED) await this.#life.exclusive('CANCEL', () => this.#rollback());
      throw err;
    }
    if (this.state === State.PREPARED) {
      try {
        let early = 0;
        await transport.begin(async () => {
          if (this.state !== State.PREPARED) return null;
          const refs = await this.files.earlyRefs();
          early = refs.length;
          return { arena: this.#arenaRef(), regions: this.kho.preservedRegions, refs };
        });
        // The pause's code is warmed first (its inputs are made up: it needs nothing of the
        // baseline), and the handlers get ready for the freeze after it (a server's baseline
        // of its idle connections): as late as it can be, so that few move before the freeze
        // (under 10 000 requests a second at 10 000 connections, warming after the baseline
        // let 2 000-6 000 of them move, each then stopped and snapshotted in the pause). What
        // they name of their handover is read by the successor now, not in the pause.
        if (early && this.#warm) {
          await this.#warm(early);
          trace('successor: the freeze warmed');
        }
        if (early && this.state === State.PREPARED) {
          const ahead: Array<[number, number]> = [];
          await this.files.afterEarly(transport.readsAhead ? (addr, size) => void ahead.push([addr, size]) : null, transport.wakeSet);
          trace('successor: handlers ready for the freeze');
          if (ahead.length) {
            const n = await transport.ahead(ahead);
            trace(`successor: read ahead ${n} of ${ahead.length} regions`);
          }
        }
        // Answer what queued during the last step (one loop turn with a poll) before
        // freezing, so that wait does not run into the pause.
        if (early) await new Promise((r) => setImmediate(() => setImmediate(r)));
        transport.beforeFreeze();
      } catch (err) {
        transport.abort();
        if (this.state === State.PREPARED) await this.#life.exclusive('CANCEL', () => this.#rollback());
        throw err;
      }
      try {
        await this.#freeze();
      } catch (err) {
        transport.abort();
        throw err;
      }
    }
    return this.#life.exclusive('REBOOT', async () => {
      const frozen = this.state === State.FROZEN;
      let done: HandedOver;
      try {
        trace('handover: verifying');
        if (frozen) this.files.verifyFrozen();
        // A closed fd makes the handover fail (EBADF) before anything reaches the next image.
        // (concat, not a spread: a spread in an array literal is a loop in bytecode, ~1 ms
        // over 10 000 refs in code that runs once.)
        const refs: FdRef[] = frozen ? this.files.carriedRefsAfter(this.#arenaRef()) : [];
        // The same fds flat (the arena first), for a successor's delta.
        let flat: { fds: Int32Array; same: Uint8Array } | null = null;
        if (frozen && transport.kind === 'successor') {
          const c = this.files.carriedFlat;
          flat = { fds: new Int32Array(c.fds.length + 1), same: new Uint8Array(c.same.length + 1) };
          flat.fds[0] = refs[0]!.fd;
          flat.fds.set(c.fds, 1);
          flat.same.set(c.same, 1);
        }
        trace('handover: verified');
        const entry = frozen ? this.kho.handover() : null;
        done = transport.handOver(entry, refs, () => opts.beforeExec?.(transport.pid), flat);
      } catch (err) {
        transport.abort();
        if (frozen) await this.#rollback();
        throw err;
      }
      // The successor has everything now. Nothing may touch a carried fd while it serves:
      // this image waits (its event loop stands still) until it commits or fails.
      opts.afterHandover?.(done.pid);
      this.emit('handover', done.pid);
      const outcome = done.outcome();
      if (outcome.committed) return done.retire();
      transport.abort(); // the successor is gone: close what is left of the link
      return this.#resume(outcome);
    });
  }

  /**
   * The successor failed before FINISH (it is dead): serve again. Every handed-over file is
   * cancelled (connections the successor left alone read again; those it touched are closed,
   * counted), the state is NORMAL, and the reason is raised.
   */
  async #resume(outcome: Exclude<Outcome, { committed: true }>): Promise<never> {
    trace('resume: the successor failed');
    this.files.cancelAfterHandover();
    await this.#rollback();
    const r = this.files.lastResume ?? { resumed: 0, lost: 0 };
    const f = outcome.failure;
    this.#lastUpdate = { outcome: 'rolled-back', mode: 'successor', reason: outcome.message, code: outcome.code, status: f?.status ?? null, stderr: f?.stderr ?? [], resumed: r.resumed, lost: r.lost, writtenBack: 0 };
    this.#resumed = true;
    this.#life.announcePid();
    this.emit('resumed', this.#lastUpdate);
    trace(`resume: serving again (${r.resumed} connections resumed, ${r.lost} closed)`);
    throw fail(outcome.code, `${outcome.message}; rolled back: this version serves again (${r.resumed} connection${r.resumed === 1 ? '' : 's'} resumed, ${r.lost} closed because the successor had used ${r.lost === 1 ? 'it' : 'them'})`);
  }

  /** The arena's fd for the next image, keyed by the Arena (it lives as long as the fd). */
  #arenaRef(): FdRef {
    return { fd: this.kho.arena.fd, key: this.kho.arena };
  }

  /** Selftest hook only (LIVEUPDATE_IOCTL_FREEZE): FREEZE without rebooting. */
  freezeForSelftest(): Promise<void> {
    if (!this.config.selftests) return Promise.reject(fail('ENOTTY', 'selftest hooks are off (LUO_SELFTESTS=0)'));
    return this.#freeze();
  }

  // ---------------------------------------------------------------------------------------
  // subsystems

  /** Register a subsystem. In UPDATED its boot(payload) runs before this resolves. */
  registerSubsystem(sub: Subsystem): Promise<void> {
    return this.#subs.register(sub);
  }

  unregisterSubsystem(sub: Subsystem | string): void {
    this.#subs.unregister(sub);
  }

  /** The payload handed over for a subsystem (UPDATED only; ENOENT otherwise or if absent). */
  getSubsystemData(sub: Subsystem | string): bigint {
    return this.#subs.dataOf(typeof sub === 'string' ? sub : sub.name);
  }

  get subsystems(): string[] {
    return this.#subs.names;
  }

  // ---------------------------------------------------------------------------------------
  // memory for subsystems (luo_alloc_preserve and friends; the rest is luo.kho)

  /** Allocate and preserve arena memory; the address is a natural subsystem payload. */
  allocPreserve(size: number): number {
    return this.kho.allocPreserve(size);
  }

  unpreserveFree(addr: number, size: number): void {
    this.kho.unpreserveFree(addr, size);
  }

  /** Next image: claim handed-over memory (else FINISH releases it). Returns its size. */
  restoreMemory(addr: number): number {
    return this.kho.restore(addr);
  }

  view(addr: number, len: number): Uint8Array {
    return this.kho.view(addr, len);
  }

  // ---------------------------------------------------------------------------------------
  // state as services hold it (src/state, docs/state.md)

  #state: StateStore | null = null;

  /**
   * A Map-like store in preserved memory (strings, numbers, bytes, JSON values), the same one
   * after an update: opened where it is, in O(1). See state/index.ts for versions and
   * migrations.
   */
  map(name: string, opts?: MapOptions): PreservedMap {
    return this.#stateStore().map(name, opts);
  }

  /** A JS value carried across the update: save() at FREEZE, load(value) in the next version. */
  keep<T>(name: string, spec: KeepSpec<T>): void {
    this.#stateStore().keep(name, spec);
  }

  /** Drop a map or kept value (its memory released now, not handed over again); false if
   *  there was none by that name. */
  forget(name: string): boolean {
    return this.#stateStore().forget(name);
  }

  #stateStore(): StateStore {
    if (this.#state) return this.#state;
    this.#life.requireRegistrable('open preserved state (luo.map, luo.keep)');
    if (this.#subs.names.includes(STATE_SUBSYSTEM)) throw fail('EEXIST', `a subsystem named "${STATE_SUBSYSTEM}" is registered: that name is luo's`);
    const kho = this.kho;
    this.#state = new StateStore({
      mem: {
        alloc: (n) => kho.allocPreserve(n),
        view: (a, n) => kho.view(a, n),
        free: (a, n) => kho.unpreserveFree(a, n),
        claim: (a) => {
          const n = kho.restore(a);
          kho.preservePhys(a, n);
          return n;
        },
        claimFree: (a) => kho.restoreFree(a),
      },
      register: (sub) => {
        this.#subs.register(sub).catch((e: Error) => process.stderr.write(`luo: the state subsystem: ${e.message}\n`));
      },
      incoming: () => {
        if (this.state !== State.UPDATED) return null;
        try {
          return this.#subs.dataOf(STATE_SUBSYSTEM);
        } catch {
          return null;
        }
      },
      warn: (m) => void process.stderr.write(`${m}\n`),
    });
    return this.#state;
  }

  // ---------------------------------------------------------------------------------------
  // files

  registerFileHandler(h: FileHandler): void {
    this.files.registerHandler(h);
  }

  unregisterFileHandler(h: FileHandler | string): void {
    this.files.unregisterHandler(h);
  }

  /** FD_PRESERVE: preserve `file` under a u64 token of the caller's choosing. */
  preserveFile(token: bigint | number, file: unknown): void {
    this.files.preserve(toToken(token), file);
  }

  /** FD_UNPRESERVE. */
  unpreserveFile(token: bigint | number): Promise<void> {
    return this.files.unpreserve(toToken(token));
  }

  /** FD_RESTORE: UPDATED only; each token once. */
  restoreFile<T = unknown>(token: bigint | number): Promise<T> {
    return this.files.restore(toToken(token)) as Promise<T>;
  }

  /** GET_FD_STATE. */
  getFdState(token: bigint | number, incoming = false): State {
    return this.files.getState(toToken(token), incoming);
  }

  /** SET_FD_EVENT: per-file transitions (reference §1.4). */
  setFdEvent(token: bigint | number, event: Event | number): Promise<void> {
    const t = toToken(token);
    switch (event) {
      case Event.PREPARE:
        return this.files.prepareFd(t);
      case Event.FREEZE:
        return this.files.freezeFd(t);
      case Event.CANCEL:
        return this.files.cancelFd(t);
      case Event.FINISH:
        return this.files.finishFd(t);
      default:
        return Promise.reject(fail('EOPNOTSUPP', `unknown event ${event}`));
    }
  }

  /** Remove the state file (the service is going away for good). */
  close(): void {
    this.#life.close();
  }
}


/** This image, as the guard of the next one would exec it again: its program, arguments,
 *  environment (without luo's own handover variables) and working directory. */
function previousImage(): { file: string; argv: string[]; env: string[]; cwd: string; nofile: [number, number] } {
  const self = selfImage();
  const env = Object.entries(process.env).filter(([k, v]) => v !== undefined && !k.startsWith('LUO_HANDOVER') && k !== 'LUO_GUARD' && k !== 'LUO_ROLLBACK').map(([k, v]) => `${k}=${v}`);
  const { soft, hard } = sys.fdLimit();
  return { file: self.file, argv: self.argv, env, cwd: self.cwd ?? process.cwd(), nofile: [soft, hard] };
}
