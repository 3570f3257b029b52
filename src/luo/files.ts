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
 * The kernel carries a struct file through kexec; a process carries fds. Each handler says
 * which fds its file needs (fds()), luo records them per token in the tree ("fds", a luo
 * extension) and keeps exactly those open across the exec.
 */
import { HandoverError, fail } from '../errors.js';
import { Fdt, FdtNode, encode } from '../fdt/index.js';
import * as sys from '../sys/index.js';
import { FILES_COMPATIBLE, State, COMPATIBLE_RE, parseTokenName, tokenName, stateName } from './abi.js';
import { asLuoError, runCallback, runInfallible, toU64, type Payload, type Timeouts } from './callbacks.js';
import type { Luo } from './luo.js';
import type { FdRef } from '../kho/successor.js';

export type { FdRef };

export interface FileArgs<H = unknown> {
  token: bigint;
  /** What attach() returned (the file itself by default). */
  file: H;
  /** The file's u64 payload (0 until prepare sets it). */
  data: bigint;
  luo: Luo;
}

export interface FileHandler<H = unknown> {
  /** Compatible string written in the tree, e.g. "memfd-v1". Unique among handlers. */
  readonly compatible: string;
  /** True when this handler can preserve `file` (an fd number, a socket, …). */
  canPreserve(file: unknown): boolean;
  /** A catch-all handler (the generic fd one) is asked after every specific handler. */
  readonly fallback?: boolean;
  /** Take a reference at preserve time (the kernel's fget). Default: the file itself. */
  attach?(file: unknown, token: bigint): H;
  /** Drop the reference when the token is unpreserved or dropped (the kernel's fput). */
  detach?(file: H, token: bigint): void;
  prepare?(a: FileArgs<H>): Payload | Promise<Payload>;
  freeze?(a: FileArgs<H>): Payload | Promise<Payload>;
  cancel?(a: FileArgs<H>): void | Promise<void>;
  /** In the next image, at FINISH. `file` is what retrieve returned, or null if never restored. */
  finish?(a: { token: bigint; file: unknown | null; data: bigint; reclaimed: boolean; luo: Luo }): void | Promise<void>;
  /** In the next image: rebuild the file from its payload. Required. */
  retrieve(a: { token: bigint; data: bigint; fds: number[]; luo: Luo }): unknown;
  /**
   * fds the next image must inherit for this file (called at FREEZE, after snapshot()). An
   * entry may come with a key (see presend): then a successor that got the same key with the
   * same fd early is not sent it again.
   */
  fds?(a: FileArgs<H>): Array<number | FdRef>;
  /**
   * Successor mode, in PREPARED, while this image still serves: fds that can be sent to the
   * successor before the freeze, each with a key, an object that names that fd for as long as
   * it is open (a libuv handle, say; never something that can be reopened on a new fd). fds()
   * then names the same key with the same fd, and only what changed travels in the pause.
   * Optional: without it, every fd of the file is sent at the freeze.
   */
  presend?(a: FileArgs<H>): FdRef[];
  /**
   * Synchronous capture at the very end of FREEZE, after every freeze() of every file: nothing
   * runs between it and the exec but promise continuations. May return a new payload (and may
   * preserve memory: KHO is not finalized yet). For state that must be exact (socket bytes).
   */
  snapshot?(a: FileArgs<H>): Payload;
  /** Called right before execve: throw if the file changed since snapshot() (the exec is then
   *  abandoned and the update cancelled, rather than losing or repeating data). */
  verify?(a: FileArgs<H>): void;
}

interface OutFile { token: bigint; handler: FileHandler; file: unknown; data: bigint; state: State }
interface InFile { token: bigint; handler: FileHandler; data: bigint; state: State; reclaimed: boolean; file: unknown | null; oldFds: number[]; fds: number[] | null }

export class Files {
  readonly #luo: Luo;
  readonly #timeouts: () => Timeouts;
  readonly #handlers: FileHandler[] = [];
  readonly #out = new Map<bigint, OutFile>();
  #outTree: { addr: number; size: number } | null = null;
  /** Incoming tree (next image), checked at boot; the set is built on first use. */
  #inTree: Fdt | null = null;
  #inTreeRegion: { addr: number; size: number } | null = null;
  #in: Map<bigint, InFile> | null = null;
  /** Incoming: each token's fds as the previous image numbered them (decoded once, at boot). */
  #inFds = new Map<bigint, number[]>();
  #carried = new Map<bigint, FdRef[]>();

  constructor(luo: Luo, timeouts: () => Timeouts) {
    this.#luo = luo;
    this.#timeouts = timeouts;
  }

  // ---------------------------------------------------------------------------------------
  // handlers

  registerHandler(h: FileHandler): void {
    this.#luo.requireRegistrable('register a file handler');
    if (!h || typeof h.canPreserve !== 'function' || typeof h.retrieve !== 'function') {
      throw fail('EINVAL', 'a file handler needs canPreserve() and retrieve()');
    }
    if (!COMPATIBLE_RE.test(h.compatible ?? '')) throw fail('EINVAL', `handler compatible ${JSON.stringify(h.compatible)}`);
    if (this.#handlers.some((x) => x === h || x.compatible === h.compatible)) throw fail('EEXIST', `a handler for "${h.compatible}" is already registered`);
    this.#handlers.push(h);
  }

  unregisterHandler(h: FileHandler | string): void {
    this.#luo.requireRegistrable('unregister a file handler');
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
    this.#luo.requireEnabled();
    this.#luo.requireState('preserve a file', State.NORMAL, State.UPDATED, 'EBUSY');
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
    this.#out.set(token, { token, handler, file: held, data: 0n, state: State.NORMAL });
  }

  async unpreserve(token: bigint): Promise<void> {
    this.#luo.requireState('unpreserve a file', State.NORMAL, State.UPDATED, 'EBUSY');
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
    return { token: f.token, file: f.file, data: f.data, luo: this.#luo };
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
    await runInfallible(() => f.handler.cancel?.(this.#args(f)), this.#timeouts().cancel, `file ${tokenName(f.token)} (${f.handler.compatible}) cancel`);
    f.data = 0n;
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
    this.#luo.requireState('finish a file', State.UPDATED, undefined, 'EBUSY');
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
      this.#writeTree(files, false);
    } catch (e) {
      for (const f of files) await this.#cancelOne(f);
      throw fail('ENOSPC', `could not write the files tree: ${(e as Error).message}`);
    }
    return BigInt(this.#outTree!.addr);
  }

  /** Subsystem freeze: freeze all files in token order, snapshot them all synchronously, then
   *  write the tree with their fds. */
  async subsystemFreeze(): Promise<bigint> {
    const files = this.#sortedOut();
    for (const f of files) await this.#freezeOne(f);
    for (const f of files) {
      if (f.state === State.FROZEN && f.handler.snapshot) {
        try {
          f.data = toU64(f.handler.snapshot(this.#args(f)), f.data);
        } catch (e) {
          throw asLuoError(e, `file ${tokenName(f.token)} (${f.handler.compatible}) snapshot`);
        }
      }
    }
    this.#writeTree(files, true);
    return BigInt(this.#outTree!.addr);
  }

  /** Right before execve: every frozen file confirms nothing changed since its snapshot. */
  verifyFrozen(): void {
    for (const f of this.#sortedOut()) {
      if (f.state === State.FROZEN && f.handler.verify) {
        try {
          f.handler.verify(this.#args(f));
        } catch (e) {
          throw asLuoError(e, `file ${tokenName(f.token)} (${f.handler.compatible}) changed after FREEZE`);
        }
      }
    }
  }

  /** Subsystem cancel: cancel every file, free the tree. */
  async subsystemCancel(): Promise<void> {
    for (const f of this.#sortedOut()) await this.#cancelOne(f);
    this.#freeTree();
    this.#carried.clear();
  }

  /** fds the next image must inherit (computed at the last freeze). */
  get carriedFds(): number[] {
    return this.carriedRefs.map((r) => r.fd);
  }

  /** The same, with each fd's key (for a successor that got some of them early). */
  get carriedRefs(): FdRef[] {
    const out: FdRef[] = [];
    for (const refs of this.#carried.values()) for (const r of refs) out.push(r);
    return out;
  }

  /** Successor mode, PREPARED: the fds the handlers let go early (presend), each with its key. */
  presendRefs(): FdRef[] {
    const out: FdRef[] = [];
    for (const f of this.#sortedOut()) {
      if (f.state !== State.PREPARED || !f.handler.presend) continue;
      let refs: FdRef[];
      try {
        refs = f.handler.presend(this.#args(f));
      } catch (e) {
        throw asLuoError(e, `file ${tokenName(f.token)} (${f.handler.compatible}) presend`);
      }
      for (const r of refs) {
        if (!Number.isInteger(r?.fd) || r.fd < 0 || !r.key || typeof r.key !== 'object') throw fail('EINVAL', `handler ${f.handler.compatible} sent fd ${String(r?.fd)} early without a key object (token ${tokenName(f.token)})`);
        out.push(r);
      }
    }
    return out;
  }

  #writeTree(files: OutFile[], withFds: boolean): void {
    const root = new FdtNode('');
    root.setString('compatible', FILES_COMPATIBLE);
    this.#carried.clear();
    for (const f of files) {
      const n = root.addChild(tokenName(f.token));
      n.setString('compatible', f.handler.compatible).setU64('data', f.data);
      if (withFds) {
        const given = f.handler.fds?.(this.#args(f)) ?? [];
        const refs: FdRef[] = new Array(given.length);
        const fds: number[] = new Array(given.length);
        for (let i = 0; i < given.length; i++) {
          const g = given[i]!;
          const r = typeof g === 'number' ? { fd: g, key: null } : g;
          if (!r || !Number.isInteger(r.fd) || r.fd < 0) throw fail('EBADF', `handler ${f.handler.compatible} named fd ${String(r?.fd)} for token ${tokenName(f.token)}`);
          refs[i] = r;
          fds[i] = r.fd;
        }
        this.#carried.set(f.token, refs);
        n.setCells('fds', fds);
      }
    }
    const kho = this.#luo.kho;
    const bytes = encode(new Fdt(root));
    if (this.#outTree && bytes.length <= this.#outTree.size) {
      kho.view(this.#outTree.addr, bytes.length).set(bytes);
      return;
    }
    this.#freeTree();
    // The kernel sizes it PAGE_SIZE << order(1024 + 128 n); leave the same slack for FREEZE.
    const size = Math.max(4096, 2 ** Math.ceil(Math.log2(bytes.length + 1024 + 128 * files.length)));
    const addr = kho.allocPreserve(size);
    kho.view(addr, bytes.length).set(bytes);
    this.#outTree = { addr, size };
  }

  #freeTree(): void {
    if (!this.#outTree) return;
    const kho = this.#luo.kho;
    try {
      kho.unpreserveFree(this.#outTree.addr, this.#outTree.size);
    } catch (e) {
      // While KHO is finalized (device closed in PREPARED) the pages stay preserved, as v3.
      if ((e as { code?: string }).code !== 'EBUSY') throw e;
    }
    this.#outTree = null;
  }

  /** Subsystem boot (next image): check the incoming tree; mark carried fds close-on-exec. */
  boot(data: bigint): void {
    const kho = this.#luo.kho;
    const addr = Number(data);
    let tree: Fdt;
    let size: number;
    try {
      tree = kho.readFdt(addr);
      size = kho.restore(addr);
    } catch (e) {
      throw new HandoverError(`files tree at ${addr}: ${(e as Error).message}`, { cause: e });
    }
    const root = tree.root;
    if (!root.isCompatible(FILES_COMPATIBLE)) throw new HandoverError(`files tree: compatible is ${JSON.stringify(root.stringList('compatible') ?? null)}, expected "${FILES_COMPATIBLE}"`);
    const seen = new Set<bigint>();
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
        node.requireString('compatible');
        node.requireU64('data');
        const fds = node.cells('fds') ?? [];
        this.#inFds.set(token, fds);
        if (kho.fdsReceived) {
          // A successor: SCM_RIGHTS gave them to us open and close-on-exec; each must be one.
          for (let i = 0; i < fds.length; i++) {
            if (!kho.hasIncomingFd(fds[i]!)) throw new HandoverError(`files tree: token ${name} carries fd ${fds[i]}, which was not handed over`);
          }
        } else {
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
    this.#inTree = tree;
    this.#inTreeRegion = { addr, size };
  }

  /** Build the incoming set on first use (v3's lazy rebuild). A token with no handler is fatal. */
  #incoming(): Map<bigint, InFile> {
    if (this.#in) return this.#in;
    const m = new Map<bigint, InFile>();
    if (this.#inTree) {
      for (const [name, node] of this.#inTree.root.children) {
        const compatible = node.requireString('compatible');
        const handler = this.#handlers.find((h) => h.compatible === compatible);
        if (!handler) this.#luo.fatal(new HandoverError(`files tree: token ${name} needs a handler for "${compatible}", and none is registered`));
        const token = parseTokenName(name);
        m.set(token, { token, handler: handler!, data: node.requireU64('data'), state: State.UPDATED, reclaimed: false, file: null, oldFds: this.#inFds.get(token) ?? node.cells('fds') ?? [], fds: null });
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
    return this.#in?.get(token)?.handler.compatible;
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
    this.#luo.requireState('restore a file', State.UPDATED, undefined, 'EBUSY');
    const f = this.#incoming().get(token);
    if (!f) throw fail('ENOENT', `token ${tokenName(token)} was not handed over`);
    if (f.reclaimed) throw fail('EINVAL', `token ${tokenName(token)} was already restored`);
    // v3 marks the token reclaimed before retrieve runs (a failed retrieve could never be
    // retried); luo marks it only once retrieve succeeded.
    const kho = this.#luo.kho;
    const args = {
      token, data: f.data, luo: this.#luo,
      // This process's numbers, translated when a handler asks (the server handler, with its
      // own table of thousands of connections, never does).
      get fds(): number[] {
        return fdsOf(f, kho);
      },
    };
    const file = await runCallback(() => f.handler.retrieve(args), this.#timeouts().boot, `file ${tokenName(token)} (${f.handler.compatible}) retrieve`);
    f.reclaimed = true;
    f.file = file;
    return file;
  }

  async #finishOne(f: InFile): Promise<void> {
    if (f.state !== State.UPDATED) return;
    await runInfallible(() => f.handler.finish?.({ token: f.token, file: f.file, data: f.data, reclaimed: f.reclaimed, luo: this.#luo }), this.#timeouts().finish, `file ${tokenName(f.token)} (${f.handler.compatible}) finish`);
    if (!f.reclaimed) {
      for (const fd of fdsOf(f, this.#luo.kho)) {
        try {
          sys.close(fd);
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
    this.#inTree = null;
    if (this.#inTreeRegion) {
      this.#luo.kho.free(this.#inTreeRegion.addr, this.#inTreeRegion.size);
      this.#inTreeRegion = null;
    }
  }

  describeOutgoing(): Array<{ token: string; compatible: string; state: string }> {
    return this.#sortedOut().map((f) => ({ token: tokenName(f.token), compatible: f.handler.compatible, state: stateName(f.state) }));
  }
}


/** An incoming file's fds in this process's numbers (translated once, on first use). */
function fdsOf(f: InFile, kho: Luo['kho']): number[] {
  f.fds ??= f.oldFds.map((fd) => kho.incomingFd(fd));
  return f.fds;
}

function describe(file: unknown): string {
  if (typeof file === 'number') return `fd ${file}`;
  if (file && typeof file === 'object') return (file as object).constructor?.name ?? 'object';
  return typeof file;
}
