/*
 * luo/files: file handlers, tokens and the internal "file-descriptors" subsystem
 * (reference §4; the kernel's luo_files.c).
 *
 * Outgoing lifecycle of a token (this image):
 *   preserve(token, file)   NORMAL/UPDATED only (EBUSY); the first handler whose canPreserve
 *                           accepts wins (ENOENT if none); token unique (EEXIST); the handler's
 *                           attach() takes its reference (the kernel's fget). State NORMAL.
 *   per-file events         SET_FD_EVENT's table exactly (prepare/freeze/cancel ahead of or
 *                           instead of the global ones).
 *   global PREPARE          prepare every NORMAL file in ascending token order; a failure
 *                           cancels the files before it (token order) and returns the error;
 *                           then the files tree is written to preserved memory and its address
 *                           becomes this subsystem's payload.
 *   global FREEZE           freeze every PREPARED file, then write the tree again.
 *   CANCEL                  cancel every PREPARED/FROZEN file, free the tree. Tokens stay
 *                           registered for the next PREPARE.
 *   unpreserve(token)       NORMAL/UPDATED only; cancels a prepared file; detach().
 * Incoming lifecycle (the next image):
 *   boot                    check the tree ("file-descriptors-v1", token names, compatible and
 *                           data on every node: else fatal); mark the carried fds close-on-exec.
 *   first restore/FINISH    build the incoming set (lazily, as v3; an unknown handler is fatal).
 *   restore(token)          UPDATED only (EBUSY); unknown ENOENT; once only (EINVAL).
 *   FINISH                  finish(reclaimed) for every incoming token (false if never
 *                           restored; its carried fds are then closed), free the tree.
 *
 * The kernel carries a struct file through kexec; a process carries fds. Each handler's
 * snapshot says which fds its file needs, luo records them per token in the tree ("fds", a luo
 * extension, in the previous image's numbers) and keeps exactly those open across the update;
 * in the next image it is the only code that renumbers them (a successor got them under new
 * numbers): handlers name fds by their index in the token's list. The hooks and their order
 * are in file-handler.ts.
 */
import { HandoverError, fail } from '../errors.js';
import { Fdt, FdtNode } from '../fdt/index.js';
import type { Incoming } from '../handover/index.js';
import { PreservedTree, fdtChecksum, type Kho } from '../kho/index.js';
import * as sys from '../sys/index.js';
import { FILES_COMPATIBLE, State, COMPATIBLE_RE, parseTokenName, tokenName, stateName } from './abi.js';
import { asLuoError, runCallback, runInfallible, toU64, type Timeouts } from './callbacks.js';
import type { FdRef, FileArgs, FileHandler, FlatFds, Frozen, HandlerMemory, IncomingMemory, Resumed, Retrieve, WakeSet } from './file-handler.js';
import type { Lifecycle } from './lifecycle.js';
import type { CarriedEntry } from '../uapi/protocol.js';
import { slicer } from '../util/slicer.js';

export type { FdRef, FileArgs, FileHandler };

/** What the files layer needs of the rest of luo. */
export interface FilesHost {
  life: Lifecycle;
  kho: Kho;
  /** What this image received (null on a cold boot). */
  incoming: Incoming | null;
  timeouts: () => Timeouts;
  /** A corrupt handover found late (the kernel's panic). */
  fatal(e: unknown): never;
  /** This image is the previous version, brought back in place after the next one failed. */
  rollback: boolean;
}

interface OutFile { token: bigint; handler: FileHandler; file: unknown; data: bigint; state: State; frozen: Frozen | null }
interface InFile { token: bigint; handler: FileHandler; compatible: string; data: bigint; state: State; reclaimed: boolean; file: unknown | null; oldFds: number[]; fds: number[] | null }

export class Files {
  readonly #host: FilesHost;
  readonly #life: Lifecycle;
  readonly #timeouts: () => Timeouts;
  readonly #handlers: FileHandler[] = [];
  readonly #out = new Map<bigint, OutFile>();
  readonly #memory: HandlerMemory;
  readonly #inMemory: IncomingMemory;
  // The kernel sizes it PAGE_SIZE << order(1024 + 128 n); leave the same slack for FREEZE.
  readonly #outTree: PreservedTree;
  /** Incoming tree (next image), checked at boot; the set is built on first use. */
  #inTree: Fdt | null = null;
  #inTreeRegion: { addr: number; size: number } | null = null;
  #in: Map<bigint, InFile> | null = null;
  /** Incoming: each token's fds as the previous image numbered them (decoded once, at boot). */
  #inFds = new Map<bigint, number[]>();
  /** Incoming, a successor: each token's fds in this process's numbers (translated at boot). */
  #inMine = new Map<bigint, Int32Array>();
  #carried = new Map<bigint, FdRef[]>();
  /** The tokens whose handler gave its fds flat too (Frozen.flat). */
  #carriedFlat = new Map<bigint, FlatFds>();
  /** The next cancel resumes files that were handed over (the next version failed). */
  #handedOver = false;
  /** Incoming: what each handed-over token was and became (the agent's report). */
  readonly #report = new Map<bigint, CarriedEntry>();
  /** What the last cancel after a handover resumed and closed. */
  lastResume: Resumed | null = null;
  /** Connections a rollback's restores left out: the failed version had used them. */
  lostAtRollback = 0;

  constructor(host: FilesHost) {
    this.#host = host;
    this.#life = host.life;
    this.#timeouts = host.timeouts;
    const kho = host.kho;
    this.#memory = {
      alloc: (size) => kho.allocPreserve(size),
      view: (addr, len) => kho.view(addr, len),
      free: (addr, size) => kho.unpreserveFree(addr, size),
    };
    this.#inMemory = {
      claim: (addr) => kho.restore(addr),
      view: (addr, len) => kho.view(addr, len),
      free: (addr, size) => kho.free(addr, size),
    };
    this.#outTree = new PreservedTree(kho, { room: (len) => 2 ** Math.ceil(Math.log2(len + 1024 + 128 * this.#out.size)) });
  }

  // ---------------------------------------------------------------------------------------
  // handlers

  registerHandler(h: FileHandler): void {
    this.#life.requireRegistrable('register a file handler');
    if (!h || typeof h.canPreserve !== 'function' || typeof h.retrieve !== 'function') {
      throw fail('EINVAL', 'a file handler needs canPreserve() and retrieve()');
    }
    if (!COMPATIBLE_RE.test(h.compatible ?? '')) throw fail('EINVAL', `handler compatible ${JSON.stringify(h.compatible)}`);
    if (this.#handlers.some((x) => x === h || x.compatible === h.compatible)) throw fail('EEXIST', `a handler for "${h.compatible}" is already registered`);
    this.#handlers.push(h);
  }

  unregisterHandler(h: FileHandler | string): void {
    this.#life.requireRegistrable('unregister a file handler');
    const i = this.#handlers.findIndex((x) => x === h || x.compatible === h);
    if (i < 0) throw fail('ENOENT', `no handler ${typeof h === 'string' ? h : h.compatible}`);
    const handler = this.#handlers[i]!;
    if ([...this.#out.values()].some((f) => f.handler === handler)) throw fail('EBUSY', `handler "${handler.compatible}" still has preserved files`);
    this.#handlers.splice(i, 1);
  }

  get handlers(): readonly FileHandler[] {
    return this.#handlers;
  }

  // ---------------------------------------------------------------------------------------
  // outgoing

  preserve(token: bigint, file: unknown): void {
    this.#life.requireEnabled();
    this.#life.requireState('preserve a file', State.NORMAL, State.UPDATED, 'EBUSY');
    const ordered = [...this.#handlers.filter((h) => !h.fallback), ...this.#handlers.filter((h) => h.fallback)];
    const handler = ordered.find((h) => {
      try {
        return h.canPreserve(file);
      } catch {
        return false;
      }
    });
    if (!handler) throw fail('ENOENT', `no file handler can preserve ${describe(file)}`);
    if (this.#out.has(token)) throw fail('EEXIST', `token ${tokenName(token)} is already preserved`);
    const held = handler.attach ? handler.attach(file, token) : file;
    this.#out.set(token, { token, handler, file: held, data: 0n, state: State.NORMAL, frozen: null });
  }

  async unpreserve(token: bigint): Promise<void> {
    this.#life.requireState('unpreserve a file', State.NORMAL, State.UPDATED, 'EBUSY');
    const f = this.#out.get(token);
    if (!f) throw fail('ENOENT', `token ${tokenName(token)} is not preserved`);
    this.#out.delete(token);
    if (f.state === State.PREPARED || f.state === State.FROZEN) await this.#cancelOne(f);
    this.#drop(f);
  }

  /** Drop every outgoing file (the device was closed): cancel the prepared ones, detach all. */
  async unpreserveAll(): Promise<number> {
    const all = this.#sortedOut();
    this.#out.clear();
    for (const f of all) {
      if (f.state === State.PREPARED || f.state === State.FROZEN) await this.#cancelOne(f);
      this.#drop(f);
    }
    return all.length;
  }

  #drop(f: OutFile): void {
    try {
      f.handler.detach?.(f.file, f.token);
    } catch (e) {
      process.emitWarning(`luo: detach of token ${tokenName(f.token)} failed: ${(e as Error).message}`);
    }
  }

  has(token: bigint): boolean {
    return this.#out.has(token);
  }

  get outgoingTokens(): bigint[] {
    return this.#sortedOut().map((f) => f.token);
  }

  #sortedOut(): OutFile[] {
    return [...this.#out.values()].sort((a, b) => (a.token < b.token ? -1 : a.token > b.token ? 1 : 0));
  }

  #args(f: OutFile): FileArgs {
    return { token: f.token, file: f.file, data: f.data, memory: this.#memory };
  }

  async #prepareOne(f: OutFile): Promise<void> {
    if (f.state !== State.NORMAL) return;
    const v = await runCallback(() => f.handler.prepare?.(this.#args(f)), this.#timeouts().prepare, `file ${tokenName(f.token)} (${f.handler.compatible}) prepare`);
    f.data = toU64(v, f.data);
    f.state = State.PREPARED;
  }

  async #freezeOne(f: OutFile): Promise<void> {
    if (f.state !== State.PREPARED) return;
    const v = await runCallback(() => f.handler.freeze?.(this.#args(f)), this.#timeouts().freeze, `file ${tokenName(f.token)} (${f.handler.compatible}) freeze`);
    f.data = toU64(v, f.data);
    f.state = State.FROZEN;
  }

  async #cancelOne(f: OutFile): Promise<void> {
    if (f.state !== State.PREPARED && f.state !== State.FROZEN) return;
    const handedOver = this.#handedOver && f.state === State.FROZEN;
    await runInfallible(async () => {
      const r = await f.handler.cancel?.({ ...this.#args(f), handedOver });
      if (handedOver && r && typeof r === 'object') {
        this.lastResume ??= { resumed: 0, lost: 0 };
        this.lastResume.resumed += r.resumed;
        this.lastResume.lost += r.lost;
      }
    }, this.#timeouts().cancel, `file ${tokenName(f.token)} (${f.handler.compatible}) cancel`);
    f.data = 0n;
    f.frozen = null;
    f.state = State.NORMAL;
  }

  // ---------------------------------------------------------------------------------------
  // per-file events (SET_FD_EVENT, reference §1.4)

  getState(token: bigint, incoming: boolean): State {
    if (incoming) {
      // v3: GET_FD_STATE does not build the incoming set, so ENOENT before the first restore.
      const f = this.#in?.get(token);
      if (!f) throw fail('ENOENT', `token ${tokenName(token)} is not in the incoming set${this.#in ? '' : ' (it is built at the first restore)'}`);
      return f.state;
    }
    const f = this.#out.get(token);
    if (!f) throw fail('ENOENT', `token ${tokenName(token)} is not preserved`);
    return f.state;
  }

  async prepareFd(token: bigint): Promise<void> {
    await this.#prepareOne(this.#outOrENOENT(token));
  }

  async freezeFd(token: bigint): Promise<void> {
    await this.#freezeOne(this.#outOrENOENT(token));
  }

  async cancelFd(token: bigint): Promise<void> {
    await this.#cancelOne(this.#outOrENOENT(token));
  }

  async finishFd(token: bigint): Promise<void> {
    this.#life.requireState('finish a file', State.UPDATED, undefined, 'EBUSY');
    const f = this.#in?.get(token);
    if (!f) throw fail('ENOENT', `token ${tokenName(token)} is not in the incoming set${this.#in ? '' : ' (it is built at the first restore)'}`);
    await this.#finishOne(f);
  }

  #outOrENOENT(token: bigint): OutFile {
    const f = this.#out.get(token);
    if (!f) throw fail('ENOENT', `token ${tokenName(token)} is not preserved`);
    return f;
  }

  // ---------------------------------------------------------------------------------------
  // the "file-descriptors" subsystem

  /** Subsystem prepare: prepare all files in token order; write the tree; payload = its address. */
  async subsystemPrepare(): Promise<bigint> {
    const files = this.#sortedOut();
    for (let i = 0; i < files.length; i++) {
      try {
        await this.#prepareOne(files[i]!);
      } catch (e) {
        for (const f of files.slice(0, i)) await this.#cancelOne(f);
        throw e;
      }
    }
    try {
      return BigInt(this.#writeTree(files, false));
    } catch (e) {
      for (const f of files) await this.#cancelOne(f);
      throw fail('ENOSPC', `could not write the files tree: ${(e as Error).message}`);
    }
  }

  /** Subsystem freeze: freeze all files in token order, snapshot them all synchronously, then
   *  write the tree with their fds. */
  async subsystemFreeze(): Promise<bigint> {
    const files = this.#sortedOut();
    for (const f of files) await this.#freezeOne(f);
    for (const f of files) {
      if (f.state !== State.FROZEN) continue;
      try {
        const frozen = f.handler.snapshot?.(this.#args(f)) ?? { fds: [] };
        f.data = toU64(frozen.data, f.data);
        f.frozen = frozen;
      } catch (e) {
        throw asLuoError(e, `file ${tokenName(f.token)} (${f.handler.compatible}) snapshot`);
      }
    }
    return BigInt(this.#writeTree(files, true));
  }

  /** Right before execve: every frozen file confirms nothing changed since its snapshot. */
  verifyFrozen(): void {
    for (const f of this.#sortedOut()) {
      if (f.state === State.FROZEN && f.frozen?.verify) {
        try {
          f.frozen.verify();
        } catch (e) {
          throw asLuoError(e, `file ${tokenName(f.token)} (${f.handler.compatible}) changed after FREEZE`);
        }
      }
    }
  }

  /** Subsystem cancel: cancel every file, free the tree. */
  async subsystemCancel(): Promise<void> {
    try {
      for (const f of this.#sortedOut()) await this.#cancelOne(f);
    } finally {
      this.#handedOver = false;
    }
    this.#outTree.destroy();
    this.#carried.clear();
    this.#carriedFlat.clear();
  }

  /** The next cancel follows a handover whose next version failed before FINISH: handlers
   *  resume what it left alone, and lastResume says what they resumed and closed. */
  cancelAfterHandover(): void {
    this.#handedOver = true;
    this.lastResume = { resumed: 0, lost: 0 };
  }

  /** fds the next image must inherit (computed at the last freeze). */
  get carriedFds(): number[] {
    return ([] as FdRef[]).concat(...this.#carried.values()).map((r) => r.fd);
  }

  /** `first`, then those fds, each with its key (for a successor that got some of them
   *  early). */
  carriedRefsAfter(first: FdRef): FdRef[] {
    return [first].concat(...this.#carried.values());
  }

  /** carriedRefs' fds as flat arrays (numbers; 1 where a handler vouched that the fd is the
   *  one it sent early), without a pass over the tokens that gave them flat. */
  get carriedFlat(): { fds: Int32Array; same: Uint8Array } {
    let n = 0;
    for (const refs of this.#carried.values()) n += refs.length;
    const fds = new Int32Array(n);
    const same = new Uint8Array(n);
    let at = 0;
    for (const [token, refs] of this.#carried) {
      const flat = this.#carriedFlat.get(token);
      if (flat) {
        fds.set(flat.fds, at);
        same.set(flat.same, at);
      } else {
        for (let i = 0; i < refs.length; i++) fds[at + i] = refs[i]!.fd;
      }
      at += refs.length;
    }
    return { fds, same };
  }

  /** Successor mode, PREPARED: the fds the handlers let go early, each with its key. */
  async earlyRefs(): Promise<FdRef[]> {
    const out: FdRef[] = [];
    for (const f of this.#sortedOut()) {
      if (f.state !== State.PREPARED || !f.handler.early) continue;
      let refs: FdRef[];
      try {
        refs = await f.handler.early(this.#args(f));
      } catch (e) {
        throw asLuoError(e, `file ${tokenName(f.token)} (${f.handler.compatible}) early`);
      }
      // Checked in slices, serving between them (10 000 refs: a few ms).
      const due = slicer();
      for (let i = 0; i < refs.length; i++) {
        const turn = due(i);
        if (turn) await turn;
        const r = refs[i]!;
        if (!Number.isInteger(r?.fd) || r.fd < 0 || !r.key || typeof r.key !== 'object') throw fail('EINVAL', `handler ${f.handler.compatible} sent fd ${String(r?.fd)} early without a key object (token ${tokenName(f.token)})`);
        out.push(r);
      }
    }
    return out;
  }

  /**
   * Successor mode, PREPARED, the fds sent early: each handler gets ready for the freeze.
   * `ahead`: the successor reads memory ahead; a handler may name regions for it (FileArgs).
   * `wake`: the successor's wake set (FileArgs).
   */
  async afterEarly(ahead: ((addr: number, size: number) => void) | null = null, wake: WakeSet | null = null): Promise<void> {
    for (const f of this.#sortedOut()) {
      if (f.state !== State.PREPARED || !f.handler.afterEarly) continue;
      try {
        await f.handler.afterEarly({ ...this.#args(f), ...(ahead ? { ahead } : {}), ...(wake ? { wake } : {}) });
      } catch (e) {
        throw asLuoError(e, `file ${tokenName(f.token)} (${f.handler.compatible}) afterEarly`);
      }
    }
  }

  /** The files tree, with each frozen file's fds when `withFds`; its address. */
  #writeTree(files: OutFile[], withFds: boolean): number {
    const root = new FdtNode('');
    root.setString('compatible', FILES_COMPATIBLE);
    this.#carried.clear();
    this.#carriedFlat.clear();
    for (const f of files) {
      const n = root.addChild(tokenName(f.token));
      n.setString('compatible', f.handler.compatible).setU64('data', f.data);
      const rep = f.frozen?.report;
      if (rep?.label) n.setString('label', rep.label);
      if (rep?.closed) n.setU32('closed', rep.closed);
      if (withFds) {
        const flat = f.frozen?.flat;
        if (flat && flat.fds.length === f.frozen!.fds.length && flat.cells.length === 4 * flat.fds.length && flat.same.length === flat.fds.length) {
          // Flat already (thousands of connections): no pass over the refs.
          this.#carried.set(f.token, f.frozen!.fds as FdRef[]);
          this.#carriedFlat.set(f.token, flat);
          n.setBytes('fds', flat.cells);
        } else {
          const { refs, fds, bad } = refsToFds(f.frozen?.fds ?? []);
          if (bad) throw fail('EBADF', `handler ${f.handler.compatible} named fd ${String(bad.fd)} for token ${tokenName(f.token)}`);
          this.#carried.set(f.token, refs);
          n.setCells('fds', fds);
        }
      }
    }
    return this.#outTree.write(new Fdt(root));
  }

  /** Subsystem boot (next image): check the incoming tree; mark carried fds close-on-exec. */
  boot(data: bigint, checksum: number | null = null): void {
    const kho = this.#host.kho;
    const incoming = this.#host.incoming;
    const addr = Number(data);
    let tree: Fdt;
    let size: number;
    try {
      tree = kho.readFdt(addr);
      size = kho.restore(addr);
    } catch (e) {
      throw new HandoverError(`files tree at ${addr}: ${(e as Error).message}`, { cause: e });
    }
    if (checksum !== null) {
      const got = fdtChecksum(kho.view(addr, kho.readFdtHeader(addr)));
      if (got !== checksum) throw new HandoverError(`files tree: damaged after the previous image wrote it (CRC-32 ${got.toString(16)}, ${checksum.toString(16)} written)`);
    }
    const root = tree.root;
    if (!root.isCompatible(FILES_COMPATIBLE)) throw new HandoverError(`files tree: compatible is ${JSON.stringify(root.stringList('compatible') ?? null)}, expected "${FILES_COMPATIBLE}"`);
    const seen = new Set<bigint>();
    let highest = -1;
    for (const [name, node] of root.children) {
      let token: bigint;
      try {
        token = parseTokenName(name);
      } catch {
        throw new HandoverError(`files tree: node "${name}" is not a token`);
      }
      if (seen.has(token)) throw new HandoverError(`files tree: token ${name} appears twice`);
      seen.add(token);
      try {
        const compatible = node.requireString('compatible');
        node.requireU64('data');
        const raw = node.bytes('fds');
        if (raw && raw.length % 4 !== 0) throw new HandoverError(`files tree: token ${name}: property "fds" is ${raw.length} bytes, not whole cells`);
        this.#report.set(token, { token: tokenName(token), compatible, label: node.string('label') ?? '', closedAtFreeze: node.u32('closed') ?? 0, restored: false, released: false, counts: {} });
        if (incoming?.received) {
          // A successor: SCM_RIGHTS gave them to us open and close-on-exec; each must be one.
          // Decoded, translated and checked in one pass (thousands of connections).
          const { old, mine } = incoming.translateCells(raw ?? new Uint8Array(0));
          this.#inFds.set(token, old);
          this.#inMine.set(token, mine);
          const bad = mine.indexOf(-1);
          if (bad >= 0) throw new HandoverError(`files tree: token ${name} carries fd ${old[bad]}, which was not handed over`);
        } else {
          const fds = node.cells('fds') ?? [];
          this.#inFds.set(token, fds);
          for (const fd of fds) if (fd > highest) highest = fd;
          for (const fd of fds) {
            try {
              sys.setCloexec(fd, true);
            } catch {
              throw new HandoverError(`files tree: token ${name} carries fd ${fd}, which is not open`);
            }
          }
        }
      } catch (e) {
        if (e instanceof HandoverError) throw e;
        throw new HandoverError(`files tree: token ${name}: ${(e as Error).message}`);
      }
    }
    if (!incoming?.received) holdFdLimit(highest);
    this.#inTree = tree;
    this.#inTreeRegion = { addr, size };
  }

  /** Every fd the handed-over files tree named (what a cold boot must close). */
  inheritedFds(): number[] {
    return [...this.#inFds.values()].flat();
  }

  /** Build the incoming set on first use (v3's lazy rebuild). A token with no handler is fatal. */
  #incoming(): Map<bigint, InFile> {
    if (this.#in) return this.#in;
    const m = new Map<bigint, InFile>();
    if (this.#inTree) {
      for (const [name, node] of this.#inTree.root.children) {
        const compatible = node.requireString('compatible');
        const handler = this.#handlers.find((h) => h.compatible === compatible) ?? this.#handlers.find((h) => h.reads?.includes(compatible));
        if (!handler) this.#host.fatal(new HandoverError(`files tree: token ${name} needs a handler for "${compatible}", and none is registered`));
        const token = parseTokenName(name);
        m.set(token, { token, handler: handler!, compatible, data: node.requireU64('data'), state: State.UPDATED, reclaimed: false, file: null, oldFds: this.#inFds.get(token) ?? node.cells('fds') ?? [], fds: null });
      }
    }
    this.#in = m;
    return m;
  }

  /** The compatible string a handed-over token was preserved with (undefined if unknown). */
  incomingCompatible(token: bigint): string | undefined {
    for (const [name, node] of this.#inTree?.root.children ?? []) {
      if (parseTokenName(name) === token) return node.string('compatible');
    }
    return this.#in?.get(token)?.compatible;
  }

  /** Drop the given outgoing tokens whatever the global state (the device was closed, v3
   *  §2.4): prepared ones are cancelled, all are detached. Returns how many were dropped. */
  async drop(tokens: Iterable<bigint>): Promise<number> {
    let n = 0;
    for (const t of [...tokens].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
      const f = this.#out.get(t);
      if (!f) continue;
      this.#out.delete(t);
      if (f.state === State.PREPARED || f.state === State.FROZEN) await this.#cancelOne(f);
      this.#drop(f);
      n++;
    }
    return n;
  }

  get incomingTokens(): bigint[] {
    return [...this.#incoming().keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  async restore(token: bigint): Promise<unknown> {
    this.#life.requireState('restore a file', State.UPDATED, undefined, 'EBUSY');
    const f = this.#incoming().get(token);
    if (!f) throw fail('ENOENT', `token ${tokenName(token)} was not handed over`);
    if (f.reclaimed) throw fail('EINVAL', `token ${tokenName(token)} was already restored`);
    // v3 marks the token reclaimed before retrieve runs (a failed retrieve could never be
    // retried); luo marks it only once retrieve succeeded.
    let file: unknown;
    try {
      file = await runCallback(() => f.handler.retrieve(this.#retrieveArgs(f)), this.#timeouts().boot, `file ${tokenName(token)} (${f.compatible}) retrieve`);
    } catch (e) {
      // A payload damaged since the previous image wrote it: the kernel's panic, one line.
      if ((e as { code?: string }).code === 'ERR_HANDOVER') this.#host.fatal(e);
      throw e;
    }
    f.reclaimed = true;
    f.file = file;
    const r = this.#report.get(token);
    if (r) r.restored = true;
    return file;
  }

  /** What an integration found restoring a token (connections adopted, upgraded ones taken,
   *  refused, left unclaimed): the truth the agent's report shows. */
  noteRestored(token: bigint, counts: Record<string, number>): void {
    const r = this.#report.get(token);
    if (r) r.counts = { ...r.counts, ...counts };
  }

  /** Every handed-over token: what it was, whether it was restored or released at FINISH
   *  unrestored, and the counts (kept after FINISH for the agent). */
  get carriedReport(): CarriedEntry[] {
    return [...this.#report.values()].map((r) => ({ ...r, counts: { ...r.counts } }));
  }

  /** What retrieve gets: the token's fds by index, translated only when asked (the server
   *  handler, with thousands of connections, takes them one by one). */
  #retrieveArgs(f: InFile): Retrieve {
    const incoming = this.#host.incoming;
    const fdsOf = (): number[] => this.#fdsOf(f);
    const fd = (i: number): number => {
      const old = f.oldFds[i];
      if (old === undefined) throw fail('EBADF', `token ${tokenName(f.token)} carries ${f.oldFds.length} fds, not #${i}`);
      return f.fds ? f.fds[i]! : incoming ? incoming.fd(old) : old;
    };
    return {
      token: f.token, compatible: f.compatible, data: f.data, memory: this.#inMemory,
      get fds(): number[] {
        return fdsOf();
      },
      fd,
      fdRange: (from: number, count: number): Int32Array => {
        if (from < 0 || from + count > f.oldFds.length) throw fail('EBADF', `token ${tokenName(f.token)} carries ${f.oldFds.length} fds, not #${from}..#${from + count - 1}`);
        if (f.fds) return Int32Array.from(f.fds.slice(from, from + count));
        const mine = this.#inMine.get(f.token);
        if (mine) return mine.slice(from, from + count);
        return incoming ? incoming.translate(f.oldFds, from, count) : Int32Array.from(f.oldFds.slice(from, from + count));
      },
      fdCount: f.oldFds.length,
      ready: (fds) => (incoming ? incoming.ready(fds) : sys.readyNow(Array.from(fds))),
      readySince: (from) => incoming?.readySince(from) ?? null,
      previousFds: f.oldFds,
      rollback: this.#host.rollback,
      lost: (n: number) => void (this.lostAtRollback += n),
    };
  }

  /** An incoming file's fds in this process's numbers (translated once, on first use). */
  #fdsOf(f: InFile): number[] {
    const incoming = this.#host.incoming;
    const mine = this.#inMine.get(f.token);
    f.fds ??= mine ? Array.from(mine) : incoming ? f.oldFds.map((fd) => incoming.fd(fd)) : [...f.oldFds];
    return f.fds;
  }

  async #finishOne(f: InFile): Promise<void> {
    if (f.state !== State.UPDATED) return;
    const rep = this.#report.get(f.token);
    if (rep && !f.reclaimed) rep.released = true;
    await runInfallible(() => f.handler.finish?.({ token: f.token, compatible: f.compatible, file: f.file, data: f.data, reclaimed: f.reclaimed }), this.#timeouts().finish, `file ${tokenName(f.token)} (${f.compatible}) finish`);
    if (!f.reclaimed) {
      for (const fd of this.#fdsOf(f)) {
        try {
          sys.closeFd(fd);
        } catch { /* the handler closed it */ }
      }
    }
    f.state = State.NORMAL;
  }

  /** Subsystem finish: finish every incoming file, free the set and the tree. */
  async subsystemFinish(): Promise<void> {
    const m = this.#incoming();
    for (const token of this.incomingTokens) await this.#finishOne(m.get(token)!);
    this.#in = new Map();
    this.#inFds.clear();
    this.#inMine.clear();
    this.#inTree = null;
    if (this.#inTreeRegion) {
      this.#host.kho.free(this.#inTreeRegion.addr, this.#inTreeRegion.size);
      this.#inTreeRegion = null;
    }
  }

  describeOutgoing(): Array<{ token: string; compatible: string; state: string }> {
    return this.#sortedOut().map((f) => ({ token: tokenName(f.token), compatible: f.handler.compatible, state: stateName(f.state) }));
  }
}


/** A handler's fds for the tree: each as a ref, and the numbers; `bad`: the first that is not
 *  an fd (one pass). */
export function refsToFds(given: ReadonlyArray<number | FdRef>): { refs: FdRef[]; fds: number[]; bad?: { fd: unknown } } {
  const refs: FdRef[] = new Array(given.length);
  const fds: number[] = new Array(given.length);
  for (let i = 0; i < given.length; i++) {
    const g = given[i]!;
    const r = typeof g === 'number' ? { fd: g, key: null } : g;
    if (!r || !Number.isInteger(r.fd) || r.fd < 0) return { refs, fds, bad: { fd: r?.fd } };
    refs[i] = r;
    fds[i] = r.fd;
  }
  return { refs, fds };
}

/**
 * After an in-place exec the carried fds keep their numbers: the fd limit must be above the
 * highest one, or poll(2) over them fails (EINVAL) and no new fd can be opened. Raise the soft
 * limit as far as the hard one allows; HandoverError when even that is too low.
 */
function holdFdLimit(highest: number): void {
  if (highest < 0) return;
  const { soft, hard } = sys.fdLimit();
  if (highest + 64 < soft) return;
  if (highest + 64 < hard) {
    try {
      sys.setFdLimit(hard);
      return;
    } catch { /* below */ }
  }
  throw new HandoverError(`this image's fd limit (RLIMIT_NOFILE ${soft}, hard ${hard}) is too low for the fds handed over (the highest is ${highest}): start the next version with a higher limit (ulimit -n)`);
}

function describe(file: unknown): string {
  if (typeof file === 'number') return `fd ${file}`;
  if (file && typeof file === 'object') return (file as object).constructor?.name ?? 'object';
  return typeof file;
}
