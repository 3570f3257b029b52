/*
 * luo/luo: the Live Update Orchestrator for one process (reference §2-§4; the kernel's
 * luo_core.c and luo_subsystems.c).
 *
 * States: UNDEFINED (disabled) · NORMAL · PREPARED · FROZEN · UPDATED.
 *
 *   boot       no "LUO" subtree handed over → NORMAL; a valid "luo-v1" tree → UPDATED;
 *              a corrupt one → fatal (exit 70), or NORMAL when configured to boot cold.
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
 *   reboot     PREPARED: FREEZE, then exec (a FREEZE failure: NORMAL, no exec). Any other
 *              state: exec without a LUO tree (FROZEN: with the frozen one). A failed exec
 *              cancels back to NORMAL and raises the exec's error.
 *              Successor mode (PREPARED only): start the next image first; once it waits,
 *              send it every fd that will not change (still serving), FREEZE, hand it the
 *              rest, close what was handed over, lower every thread, wait for its FINISH
 *              (at most 5 s), exit. A successor that
 *              fails or is too slow before it has taken the handover is killed and this image
 *              cancels back to NORMAL.
 *
 * Transitions run one at a time (queued, like the kernel's rwsem writers). While one runs,
 * register/unregister/preserve/unpreserve raise EBUSY instead of blocking.
 */
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { resolveConfig, trace, type LuoConfig } from '../config.js';
import { HandoverError, LuoError, fail, type ErrnoName } from '../errors.js';
import { FdtNode, encode } from '../fdt/index.js';
import { Successor, bootKho, kexec, panic, retire, selfImage, type FdRef, type Image, type Kho } from '../kho/index.js';
import {
  Event, FILES_SUBSYSTEM, LIVEUPDATE_NUMBER, LUO_COMPATIBLE, LUO_SUBTREE, State, SUBSYSTEMS_COMPATIBLE, SUBSYSTEMS_NODE,
  SUBSYSTEM_NAME_RE, stateName, toToken,
} from './abi.js';
import { DEFAULT_TIMEOUTS, runCallback, runInfallible, toU64, type Payload, type Timeouts } from './callbacks.js';
import { Files, type FileHandler } from './files.js';
import { StateFile } from './statefile.js';

/** A part of the service that takes part in live updates (struct liveupdate_subsystem). */
export interface Subsystem {
  readonly name: string;
  /** Serialize; return the u64 payload (often an arena address), or nothing to keep it. */
  prepare?(): Payload | Promise<Payload>;
  /** Last chance in the blackout window; gets and may replace the payload. */
  freeze?(data: bigint): Payload | Promise<Payload>;
  /** Undo prepare/freeze. Must not fail. */
  cancel?(data: bigint): void | Promise<void>;
  /** Next image, at registration: the payload handed over. */
  boot?(data: bigint): void | Promise<void>;
  /** Next image, at FINISH. Must not fail. */
  finish?(data: bigint): void | Promise<void>;
}

export interface RebootOpts {
  /** Called right before the point of no return (the exec, or the handover to a successor). */
  beforeExec?: () => void;
  /** Hand over to a pre-started successor process instead of exec'ing in place. */
  successor?: boolean;
  /** Successor mode: how long it may take to be ready, and to take the handover (default: the boot timeout). */
  successorTimeoutMs?: number;
  /** Successor mode: called with its pid once it owns everything, right before this process exits. */
  afterHandover?: (pid: number) => void;
}

export interface LuoOptions extends Partial<LuoConfig> {
  timeouts?: Partial<Timeouts>;
  /** Successor mode: called right before this image tells the running one it is ready (the
   *  running one then freezes): the last start-up work that must not overlap the pause. */
  beforeHandover?: () => void;
  /** Successor mode: called once the running image has sent what it can before its freeze,
   *  right before it freezes: settle what would otherwise land in the pause. */
  settle?: () => void;
}

interface Entry { sub: Subsystem; data: bigint; internal?: boolean }

/** After a successor handover, how long this image waits for the successor's FINISH before it
 *  exits anyway (it holds nothing but its memory meanwhile). */
const RELEASE_WAIT_MS = 5000;

export class Luo extends EventEmitter {
  readonly config: LuoConfig;
  readonly kho: Kho;
  readonly files: Files;
  timeouts: Timeouts;
  #state: State = State.UNDEFINED;
  #stateFile: StateFile | null = null;
  readonly #subs: Entry[] = [];
  readonly #filesEntry: Entry;
  #outTree: { addr: number; size: number } | null = null;
  #inTree: FdtNode | null = null;
  #inRegion: { addr: number; size: number } | null = null;
  #number = 0;
  #queue: Promise<unknown> = Promise.resolve();
  #transition: string | null = null;

  private constructor(config: LuoConfig, kho: Kho, timeouts: Timeouts) {
    super();
    this.config = config;
    this.kho = kho;
    this.timeouts = timeouts;
    this.files = new Files(this, () => this.timeouts);
    const files = this.files;
    this.#filesEntry = {
      internal: true,
      data: 0n,
      sub: {
        name: FILES_SUBSYSTEM,
        prepare: () => files.subsystemPrepare(),
        freeze: () => files.subsystemFreeze(),
        cancel: () => files.subsystemCancel(),
        finish: () => files.subsystemFinish(),
      },
    };
  }

  /** Boot luo in this image: adopt the handover if there is one. */
  static boot(opts: LuoOptions = {}): Luo {
    const config = resolveConfig(opts);
    const kho = bootKho({
      arenaSize: config.arenaSize,
      onCorrupt: config.onCorrupt,
      enabled: config.enabled,
      debugDir: config.khoDebug ? path.join(config.rundir, 'debug') : undefined,
      beforeHandover: opts.beforeHandover,
      settle: opts.settle,
    });
    trace('boot: kho adopted');
    const luo = new Luo(config, kho, { ...DEFAULT_TIMEOUTS, ...opts.timeouts });
    luo.#boot();
    trace(`boot: luo ${luo.stateName}`);
    return luo;
  }

  #boot(): void {
    let state = State.NORMAL;
    if (!this.config.enabled) state = State.UNDEFINED;
    else {
      try {
        if (this.#adoptTree()) state = State.UPDATED;
      } catch (e) {
        if (!(e instanceof HandoverError) || this.config.onCorrupt !== 'cold') this.fatal(e);
        process.emitWarning(`luo: ignoring the LUO handover and booting NORMAL: ${(e as Error).message}`);
        this.#inTree = null;
        this.kho.releaseUnclaimed();
      }
    }
    this.#state = state;
    if (this.config.stateFile) this.#stateFile = StateFile.open(this.config.rundir, stateName(state), { deferred: this.kho.fdsReceived });
  }

  /** Read the handed-over "luo-v1" tree. False when there is none. HandoverError if corrupt. */
  #adoptTree(): boolean {
    let addr: number;
    try {
      addr = this.kho.retrieveSubtree(LUO_SUBTREE);
    } catch (e) {
      if ((e as LuoError).code === 'ENOENT') return false;
      throw e;
    }
    const bad = (msg: string): never => {
      throw new HandoverError(`LUO tree: ${msg}`);
    };
    let root: FdtNode;
    try {
      root = this.kho.readFdt(addr).root;
    } catch (e) {
      return bad((e as Error).message);
    }
    if (!root.isCompatible(LUO_COMPATIBLE)) bad(`compatible is ${JSON.stringify(root.stringList('compatible') ?? null)}, expected "${LUO_COMPATIBLE}"`);
    const subs = root.child(SUBSYSTEMS_NODE);
    if (!subs) bad(`no /${SUBSYSTEMS_NODE} node`);
    if (!subs!.isCompatible(SUBSYSTEMS_COMPATIBLE)) bad(`/${SUBSYSTEMS_NODE} is not "${SUBSYSTEMS_COMPATIBLE}"`);
    for (const [name, v] of subs!.props) {
      if (name !== 'compatible' && v.length !== 8) bad(`payload of subsystem "${name}" is ${v.length} bytes, not a u64`);
    }
    try {
      this.#number = Number(root.u64(LIVEUPDATE_NUMBER) ?? 0n);
    } catch (e) {
      bad((e as Error).message);
    }
    this.#inRegion = { addr, size: this.kho.restore(addr) };
    this.#inTree = root;
    const files = subs!.u64(FILES_SUBSYSTEM);
    if (files !== undefined && files !== 0n) this.files.boot(files);
    return true;
  }

  /** A fatal error (the kernel's panic): one line on stderr, exit 70. */
  fatal(e: unknown): never {
    panic(e instanceof LuoError ? e.message : `ERR_HANDOVER: ${(e as Error).message}`);
  }

  // ---------------------------------------------------------------------------------------
  // state

  get state(): State {
    return this.#state;
  }

  get stateName(): string {
    return stateName(this.#state);
  }

  /** Live updates this service has gone through (carried across updates). */
  get liveupdateNumber(): number {
    return this.#number;
  }

  get stateFilePath(): string | null {
    return this.#stateFile?.path ?? null;
  }

  #setState(s: State): void {
    if (s === this.#state) return;
    const from = this.#state;
    this.#state = s;
    this.#stateFile?.write(stateName(s));
    this.emit('state', s, from);
  }

  requireEnabled(): void {
    if (!this.config.enabled) throw fail('EOPNOTSUPP', 'live update is disabled (LUO_ENABLE=0)');
  }

  /** EBUSY (or `errno`) unless the state is one of `allowed` and no transition is running. */
  requireState(what: string, a: State, b?: State, errno: ErrnoName = 'EBUSY'): void {
    if (this.#transition) throw fail('EBUSY', `cannot ${what} while ${this.#transition} is in progress`);
    if (this.#state !== a && this.#state !== b) {
      const allowed = [a, b].filter((x) => x !== undefined).map((x) => stateName(x!)).join(' or ');
      throw fail(errno, `cannot ${what} in state ${this.stateName} (only in ${allowed})`);
    }
  }

  /** Run a transition exclusively (transitions queue behind each other). */
  #exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(async () => {
      this.#transition = name;
      try {
        return await fn();
      } finally {
        this.#transition = null;
      }
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  // ---------------------------------------------------------------------------------------
  // events

  /** SET_EVENT: PREPARE, FINISH, CANCEL. FREEZE is EINVAL (only reboot freezes); unknown EOPNOTSUPP. */
  setEvent(event: Event | number): Promise<void> {
    switch (event) {
      case Event.PREPARE:
        return this.prepare();
      case Event.FINISH:
        return this.finish();
      case Event.CANCEL:
        return this.cancel();
      case Event.FREEZE:
        return Promise.reject(fail('EINVAL', 'FREEZE cannot be requested: it happens only at reboot'));
      default:
        return Promise.reject(fail('EOPNOTSUPP', `unknown event ${event}`));
    }
  }

  #list(): Entry[] {
    return this.config.enabled ? [...this.#subs, this.#filesEntry] : [...this.#subs];
  }

  prepare(): Promise<void> {
    return this.#exclusive('PREPARE', async () => {
      this.requireEnabled();
      if (this.#state !== State.NORMAL) throw fail('EINVAL', `PREPARE needs state normal, not ${this.stateName}`);
      const list = this.#list();
      // Each payload is cached as soon as its callback returns (cancel gets it); the tree is
      // written only once every subsystem has succeeded.
      for (let i = 0; i < list.length; i++) {
        const e = list[i]!;
        try {
          e.data = toU64(await runCallback(() => e.sub.prepare?.(), this.timeouts.prepare, `subsystem "${e.sub.name}" prepare`), e.data);
        } catch (err) {
          await this.#cancelEntries(list.slice(0, i));
          throw err;
        }
      }
      try {
        this.#writeTree(list);
      } catch (err) {
        await this.#cancelEntries(list);
        throw fail('ENOENT', `could not write the LUO tree: ${(err as Error).message}`);
      }
      this.#setState(State.PREPARED);
      this.kho.finalize(); // v3: a failure here is returned, and the state stays PREPARED
    });
  }

  /** FREEZE (reboot and the selftest hook only). */
  #freeze(): Promise<void> {
    return this.#exclusive('FREEZE', async () => {
      if (this.#state !== State.PREPARED) throw fail('EINVAL', `FREEZE needs state prepared, not ${this.stateName}`);
      const list = this.#list();
      if (this.kho.finalized) this.kho.abort();
      try {
        trace('freeze: start');
        for (const e of list) {
          e.data = toU64(await runCallback(() => e.sub.freeze?.(e.data), this.timeouts.freeze, `subsystem "${e.sub.name}" freeze`), e.data);
          trace(`freeze: ${e.sub.name} done`);
        }
        this.#writeTree(list);
        trace('freeze: tree written');
        this.kho.finalize();
        trace('freeze: kho finalized');
      } catch (err) {
        await this.#rollback();
        throw err;
      }
      this.#setState(State.FROZEN);
      trace('freeze: frozen');
    });
  }

  cancel(): Promise<void> {
    return this.#exclusive('CANCEL', async () => {
      this.requireEnabled();
      if (this.#state !== State.PREPARED && this.#state !== State.FROZEN) {
        if (!this.kho.finalized) throw fail('ENOENT', `nothing to cancel in state ${this.stateName} (KHO is not finalized)`);
        throw fail('EINVAL', `CANCEL needs state prepared or frozen, not ${this.stateName}`);
      }
      await this.#rollback();
    });
  }

  finish(): Promise<void> {
    return this.#exclusive('FINISH', async () => {
      this.requireEnabled();
      if (this.#state !== State.UPDATED) throw fail('EINVAL', `FINISH needs state updated, not ${this.stateName}`);
      const incoming = this.#inTree?.child(SUBSYSTEMS_NODE);
      for (const e of this.#subs) {
        const data = incoming?.props.has(e.sub.name) ? incoming.u64(e.sub.name)! : undefined;
        // A subsystem the previous image did not have gets no finish (v3 would panic).
        if (data !== undefined) await runInfallible(() => e.sub.finish?.(data), this.timeouts.finish, `subsystem "${e.sub.name}" finish`);
        e.data = 0n;
      }
      await this.files.subsystemFinish();
      if (this.#inRegion) {
        this.kho.free(this.#inRegion.addr, this.#inRegion.size);
        this.#inRegion = null;
      }
      this.#inTree = null;
      this.kho.closeReadiness();
      const leaked = this.kho.releaseUnclaimed();
      if (leaked > 0) process.emitWarning(`luo: FINISH released ${leaked} bytes of handed-over memory that no subsystem restored`, { code: 'LUO_UNCLAIMED_MEMORY' });
      this.#setState(State.NORMAL);
      // A successor wrote its first state off the main thread; FINISH is over once the file
      // says what the state is.
      await this.#stateFile?.idle();
      // A successor: the previous image may exit now (it waited, so that tearing down its
      // memory took nothing from this image's first moments of serving).
      this.kho.releasePrevious();
    });
  }

  /** Back to NORMAL from PREPARED/FROZEN (CANCEL, a failed FREEZE, a failed exec): KHO is
   *  aborted first, so cancel callbacks can unpreserve; then every subsystem is cancelled in
   *  registration order and the tree is freed. */
  async #rollback(): Promise<void> {
    if (this.kho.finalized) this.kho.abort();
    await this.#cancelEntries(this.#list());
    this.#destroyTree();
    this.#setState(State.NORMAL);
  }

  async #cancelEntries(entries: Entry[]): Promise<void> {
    for (const e of entries) {
      await runInfallible(() => e.sub.cancel?.(e.data), this.timeouts.cancel, `subsystem "${e.sub.name}" cancel`);
      e.data = 0n;
    }
  }

  /** Write (or rewrite in place) the outgoing "luo-v1" tree and add it as KHO subtree "LUO". */
  #writeTree(list: Entry[]): void {
    const root = new FdtNode('');
    root.setString('compatible', LUO_COMPATIBLE).setU64(LIVEUPDATE_NUMBER, this.#number + 1);
    const subs = root.addChild(SUBSYSTEMS_NODE).setString('compatible', SUBSYSTEMS_COMPATIBLE);
    for (const e of list) subs.setU64(e.sub.name, e.data);
    const blob = encode(root);
    if (this.#outTree && blob.length <= this.#outTree.size) {
      this.kho.view(this.#outTree.addr, blob.length).set(blob);
      return;
    }
    this.#destroyTree();
    const size = Math.max(4096, Math.ceil(blob.length / 4096) * 4096);
    const addr = this.kho.allocPreserve(size);
    this.kho.view(addr, blob.length).set(blob);
    this.kho.addSubtree(LUO_SUBTREE, addr);
    this.#outTree = { addr, size };
  }

  #destroyTree(): void {
    if (!this.#outTree) return;
    this.kho.removeSubtree(LUO_SUBTREE);
    this.kho.unpreserveFree(this.#outTree.addr, this.#outTree.size);
    this.#outTree = null;
  }

  /** Address of the outgoing "luo-v1" tree (null when not PREPARED/FROZEN). For tests and dump. */
  get outgoingTreeAddress(): number | null {
    return this.#outTree?.addr ?? null;
  }

  /**
   * reboot(LINUX_REBOOT_CMD_KEXEC): in PREPARED, FREEZE and then exec the next image
   * (default: this service's own command line, read again from disk). Returns only by throwing.
   */
  async reboot(image: Image = selfImage(), opts: RebootOpts = {}): Promise<never> {
    if (opts.successor) return this.#rebootToSuccessor(image, opts);
    if (this.#state === State.PREPARED) await this.#freeze();
    return this.#exclusive('REBOOT', async () => {
      const frozen = this.#state === State.FROZEN;
      try {
        return kexec(frozen ? this.kho : null, image, {
          keepFds: frozen ? this.files.carriedFds : [],
          beforeExec: () => {
            if (frozen) this.files.verifyFrozen();
            opts.beforeExec?.();
          },
        });
      } catch (err) {
        if (frozen) await this.#rollback();
        throw err;
      }
    });
  }

  /**
   * Successor mode (kho/successor.ts): start the next image now, while this one serves; once
   * it has loaded and waits, FREEZE, hand it the arena and every carried fd, and exit when it
   * has them. Needs PREPARED (EINVAL otherwise). If the successor dies or is too slow before
   * it takes the handover, it is killed, this image cancels back to NORMAL and keeps serving,
   * and the error is raised (ECHILD, ETIMEDOUT). Returns only by throwing.
   */
  async #rebootToSuccessor(image: Image, opts: RebootOpts): Promise<never> {
    if (this.#state !== State.PREPARED) throw fail('EINVAL', `a successor reboot needs state prepared, not ${this.stateName}`);
    let next: Successor;
    try {
      next = Successor.start(image);
    } catch (err) {
      await this.#exclusive('CANCEL', () => this.#rollback());
      throw err;
    }
    const timeout = opts.successorTimeoutMs ?? this.timeouts.boot;
    try {
      await next.ready(timeout);
      trace('successor: ready');
      // Still serving: send the arena and every fd that will not change before the freeze, so
      // that only what did change crosses in the pause (and the successor maps the arena now).
      if (next.acceptsPresend && this.#state === State.PREPARED) {
        const refs: FdRef[] = [this.#arenaRef(), ...this.files.presendRefs()];
        await next.presend(refs, { arenaFd: this.kho.arena.fd, regions: this.kho.preservedRegions }, timeout);
        trace(`successor: ${refs.length} fds sent early`);
        // The successor's work on them (a full collection, on every core it can get) may have
        // kept this image from answering: answer what queued meanwhile (one loop turn with a
        // poll) before freezing, so that wait does not run into the pause.
        await new Promise((r) => setImmediate(() => setImmediate(r)));
      }
    } catch (err) {
      next.abort();
      if (this.#state === State.PREPARED) await this.#exclusive('CANCEL', () => this.#rollback());
      throw err;
    }
    try {
      await this.#freeze();
    } catch (err) {
      next.abort();
      throw err;
    }
    return this.#exclusive('REBOOT', async () => {
      let refs: FdRef[] = [];
      try {
        trace('handover: verifying');
        this.files.verifyFrozen();
        // A closed fd makes sendmsg fail with EBADF before anything reaches the successor.
        refs = [this.#arenaRef(), ...this.files.carriedRefs];
        trace('handover: verified');
        opts.beforeExec?.();
        next.handover(this.kho.handover(), refs, timeout);
        trace('handover: taken');
      } catch (err) {
        next.abort();
        await this.#rollback();
        throw err;
      }
      // The successor owns everything now. Nothing more may touch a carried fd: leave at once.
      opts.afterHandover?.(next.pid ?? 0);
      retire(refs.map((r) => r.fd));
      // Exit once the successor has finished its update (it closes the link at FINISH), not
      // while it serves its first requests: the exit's teardown would compete with them.
      next.awaitRelease(RELEASE_WAIT_MS);
      process.exit(0);
    });
  }

  /** The arena's fd for a successor, keyed by the Arena (it lives as long as the fd). */
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

  /**
   * Registration is allowed in NORMAL and UPDATED, and always when luo is disabled (as the
   * kernel's CONFIG_LIVEUPDATE=n stubs: the service's code runs the same either way).
   */
  requireRegistrable(what: string): void {
    if (this.config.enabled) this.requireState(what, State.NORMAL, State.UPDATED);
  }

  /** Register a subsystem. In UPDATED its boot(payload) runs before this resolves. */
  async registerSubsystem(sub: Subsystem): Promise<void> {
    this.requireRegistrable('register a subsystem');
    if (!sub || typeof sub.name !== 'string' || !SUBSYSTEM_NAME_RE.test(sub.name) || sub.name === 'compatible') {
      throw fail('EINVAL', `subsystem name ${JSON.stringify(sub?.name)} (1-63 of A-Z a-z 0-9 , . _ + -)`);
    }
    if (sub.name === FILES_SUBSYSTEM || this.#subs.some((e) => e.sub === sub || e.sub.name === sub.name)) {
      throw fail('EEXIST', `subsystem "${sub.name}" is already registered`);
    }
    const entry: Entry = { sub, data: 0n };
    this.#subs.push(entry);
    if (this.#state === State.UPDATED && sub.boot) {
      const subs = this.#inTree?.child(SUBSYSTEMS_NODE);
      if (subs?.props.has(sub.name)) {
        try {
          await runCallback(() => sub.boot!(subs.u64(sub.name)!), this.timeouts.boot, `subsystem "${sub.name}" boot`);
        } catch (e) {
          this.#subs.splice(this.#subs.indexOf(entry), 1);
          throw e;
        }
      }
    }
  }

  unregisterSubsystem(sub: Subsystem | string): void {
    this.requireRegistrable('unregister a subsystem');
    const i = this.#subs.findIndex((e) => e.sub === sub || e.sub.name === sub);
    if (i < 0) throw fail('ENOENT', `subsystem ${JSON.stringify(typeof sub === 'string' ? sub : sub?.name)} is not registered`);
    this.#subs.splice(i, 1);
  }

  /** The payload handed over for a subsystem (UPDATED only; ENOENT otherwise or if absent). */
  getSubsystemData(sub: Subsystem | string): bigint {
    const name = typeof sub === 'string' ? sub : sub.name;
    if (this.#state !== State.UPDATED) throw fail('ENOENT', `no incoming data in state ${this.stateName}`);
    const v = this.#inTree?.child(SUBSYSTEMS_NODE)?.u64(name);
    if (v === undefined) throw fail('ENOENT', `no payload was handed over for subsystem "${name}"`);
    return v;
  }

  get subsystems(): string[] {
    return this.#subs.map((e) => e.sub.name);
  }

  // ---------------------------------------------------------------------------------------
  // memory for subsystems (luo_alloc_preserve and friends)

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
  // files

  registerFileHandler(h: FileHandler): void {
    this.files.registerHandler(h as FileHandler);
  }

  unregisterFileHandler(h: FileHandler | string): void {
    this.files.unregisterHandler(h as FileHandler);
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
    this.#stateFile?.close();
    this.#stateFile = null;
  }
}
