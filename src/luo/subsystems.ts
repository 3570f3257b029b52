/*
 * luo/subsystems: the subsystem registry and the "luo-v1" tree that carries their payloads
 * (reference §3, §5.2; the kernel's luo_subsystems.c).
 *
 * Registry: register() in NORMAL/UPDATED (EBUSY otherwise; always when disabled), a duplicate
 * object or name EEXIST, a name outside the FDT alphabet EINVAL; in UPDATED the subsystem's
 * boot(payload) runs before register resolves (a boot that throws fails the registration).
 * Phases, run by the state machine (luo.ts) inside its transitions, in registration order with
 * the internal "file-descriptors" subsystem last:
 *   prepare   each prepare() may return a u64 payload; a failure cancels the ones before it
 *             (forward order) and is raised; on success the tree is written
 *   freeze    each freeze(data) may replace the payload; the tree is written again; a failure
 *             is raised (the caller cancels everything)
 *   cancel    every cancel(data), payloads back to 0 (cancels must not fail: a throw is a
 *             warning), the tree destroyed
 *   finish    finish(data) for every subsystem the previous image had, then the incoming tree
 *             is freed
 * Incoming: adopt() reads the handed-over "LUO" subtree (compatible, subsystems node, 8-byte
 * payloads, liveupdate-number): HandoverError when anything is wrong; null when there is none.
 */
import { HandoverError, LuoError, fail } from '../errors.js';
import { FdtNode } from '../fdt/index.js';
import { PreservedTree, fdtChecksum, type Kho } from '../kho/index.js';
import {
  FILES_SUBSYSTEM, LIVEUPDATE_NUMBER, LUO_COMPATIBLE, LUO_SUBTREE, State, SUBSYSTEMS_COMPATIBLE, SUBSYSTEMS_NODE, SUBSYSTEM_NAME_RE,
} from './abi.js';
import { runCallback, runInfallible, toU64, type Payload, type Timeouts } from './callbacks.js';
import type { Lifecycle } from './lifecycle.js';
import { FILES_CHECKSUM, PREVIOUS_IMAGE_NODE } from '../uapi/trees.js';

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

interface Entry { sub: Subsystem; data: bigint }

export class Subsystems {
  readonly #life: Lifecycle;
  readonly #kho: Kho;
  readonly #timeouts: () => Timeouts;
  readonly #subs: Entry[] = [];
  /** The internal "file-descriptors" subsystem, always last. */
  readonly #files: Entry;
  readonly #tree: PreservedTree;
  /** Incoming: the handed-over subsystems node and the tree's memory. */
  #in: FdtNode | null = null;
  #inRegion: { addr: number; size: number } | null = null;
  #number = 0;
  /** In-place updates: the image to bring back if the next one fails (written in the tree). */
  previousImage: { file: string; argv: string[]; env: string[]; cwd: string; nofile: [number, number] } | null = null;

  constructor(life: Lifecycle, kho: Kho, timeouts: () => Timeouts, files: Subsystem) {
    this.#life = life;
    this.#kho = kho;
    this.#timeouts = timeouts;
    this.#files = { sub: files, data: 0n };
    this.#tree = new PreservedTree(kho, { subtree: LUO_SUBTREE });
  }

  #list(): Entry[] {
    return this.#life.enabled ? [...this.#subs, this.#files] : [...this.#subs];
  }

  // ---------------------------------------------------------------------------------------
  // incoming

  /** Read the handed-over "luo-v1" tree; the files subsystem's payload (0: none). Null when
   *  nothing was handed over. HandoverError when the tree is corrupt. */
  adopt(): { files: bigint; filesChecksum: number | null } | null {
    let addr: number;
    try {
      addr = this.#kho.retrieveSubtree(LUO_SUBTREE);
    } catch (e) {
      if ((e as LuoError).code === 'ENOENT') return null;
      throw e;
    }
    const bad = (msg: string): never => {
      throw new HandoverError(`LUO tree: ${msg}`);
    };
    let root: FdtNode;
    try {
      root = this.#kho.readFdt(addr).root;
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
    // The structure is right; is every byte what the previous image wrote?
    this.#kho.verifySubtree(LUO_SUBTREE);
    this.#inRegion = { addr, size: this.#kho.restore(addr) };
    this.#in = subs!;
    const sum = root.cells(FILES_CHECKSUM);
    return { files: subs!.u64(FILES_SUBSYSTEM) ?? 0n, filesChecksum: sum?.length === 1 ? sum[0]! : null };
  }

  /** Forget the incoming tree (a cold boot after a corrupt handover). */
  forget(): void {
    this.#in = null;
    this.#inRegion = null;
  }

  /** Live updates this service has gone through (carried across updates). */
  get number(): number {
    return this.#number;
  }

  // ---------------------------------------------------------------------------------------
  // registry

  async register(sub: Subsystem): Promise<void> {
    this.#life.requireRegistrable('register a subsystem');
    if (!sub || typeof sub.name !== 'string' || !SUBSYSTEM_NAME_RE.test(sub.name) || sub.name === 'compatible') {
      throw fail('EINVAL', `subsystem name ${JSON.stringify(sub?.name)} (1-63 of A-Z a-z 0-9 , . _ + -)`);
    }
    if (sub.name === FILES_SUBSYSTEM || this.#subs.some((e) => e.sub === sub || e.sub.name === sub.name)) {
      throw fail('EEXIST', `subsystem "${sub.name}" is already registered`);
    }
    const entry: Entry = { sub, data: 0n };
    this.#subs.push(entry);
    if (this.#life.state === State.UPDATED && sub.boot && this.#in?.props.has(sub.name)) {
      try {
        await runCallback(() => sub.boot!(this.#in!.u64(sub.name)!), this.#timeouts().boot, `subsystem "${sub.name}" boot`);
      } catch (e) {
        this.#subs.splice(this.#subs.indexOf(entry), 1);
        throw e;
      }
    }
  }

  unregister(sub: Subsystem | string): void {
    this.#life.requireRegistrable('unregister a subsystem');
    const i = this.#subs.findIndex((e) => e.sub === sub || e.sub.name === sub);
    if (i < 0) throw fail('ENOENT', `subsystem ${JSON.stringify(typeof sub === 'string' ? sub : sub?.name)} is not registered`);
    this.#subs.splice(i, 1);
  }

  /** The payload handed over for a subsystem (UPDATED only; ENOENT otherwise or if absent). */
  dataOf(name: string): bigint {
    if (this.#life.state !== State.UPDATED) throw fail('ENOENT', `no incoming data in state ${this.#life.name}`);
    const v = this.#in?.u64(name);
    if (v === undefined) throw fail('ENOENT', `no payload was handed over for subsystem "${name}"`);
    return v;
  }

  get names(): string[] {
    return this.#subs.map((e) => e.sub.name);
  }

  // ---------------------------------------------------------------------------------------
  // phases

  async prepare(): Promise<void> {
    const list = this.#list();
    // Each payload is cached as soon as its callback returns (cancel gets it); the tree is
    // written only once every subsystem has succeeded.
    for (let i = 0; i < list.length; i++) {
      const e = list[i]!;
      try {
        e.data = toU64(await runCallback(() => e.sub.prepare?.(), this.#timeouts().prepare, `subsystem "${e.sub.name}" prepare`), e.data);
      } catch (err) {
        await this.#cancel(list.slice(0, i));
        throw err;
      }
    }
    try {
      this.#write(list);
    } catch (err) {
      await this.#cancel(list);
      throw fail('ENOENT', `could not write the LUO tree: ${(err as Error).message}`);
    }
  }

  /** Each freeze(data), then the tree again; raises the first failure (the caller cancels). */
  async freeze(trace: (what: string) => void): Promise<void> {
    const list = this.#list();
    for (const e of list) {
      e.data = toU64(await runCallback(() => e.sub.freeze?.(e.data), this.#timeouts().freeze, `subsystem "${e.sub.name}" freeze`), e.data);
      trace(`freeze: ${e.sub.name} done`);
    }
    this.#write(list);
  }

  async cancel(): Promise<void> {
    await this.#cancel(this.#list());
    this.#tree.destroy();
  }

  async #cancel(entries: Entry[]): Promise<void> {
    for (const e of entries) {
      await runInfallible(() => e.sub.cancel?.(e.data), this.#timeouts().cancel, `subsystem "${e.sub.name}" cancel`);
      e.data = 0n;
    }
  }

  /** finish(data) for each subsystem the previous image had (the files subsystem included),
   *  then the incoming tree's memory goes. */
  async finish(): Promise<void> {
    const incoming = this.#in;
    for (const e of this.#subs) {
      const data = incoming?.props.has(e.sub.name) ? incoming.u64(e.sub.name)! : undefined;
      // A subsystem the previous image did not have gets no finish (v3 would panic).
      if (data !== undefined) await runInfallible(() => e.sub.finish?.(data), this.#timeouts().finish, `subsystem "${e.sub.name}" finish`);
      e.data = 0n;
    }
    await this.#files.sub.finish?.(0n);
    if (this.#inRegion) this.#kho.free(this.#inRegion.addr, this.#inRegion.size);
    this.#inRegion = null;
    this.#in = null;
  }

  /** Write (or rewrite in place) the outgoing "luo-v1" tree, KHO subtree "LUO". */
  #write(list: Entry[]): void {
    const root = new FdtNode('');
    root.setString('compatible', LUO_COMPATIBLE).setU64(LIVEUPDATE_NUMBER, this.#number + 1);
    const subs = root.addChild(SUBSYSTEMS_NODE).setString('compatible', SUBSYSTEMS_COMPATIBLE);
    for (const e of list) {
      subs.setU64(e.sub.name, e.data);
      // The files tree is this tree's to vouch for (the KHO checksum covers this tree only).
      if (e === this.#files && e.data !== 0n) {
        const at = Number(e.data);
        root.setCells(FILES_CHECKSUM, [fdtChecksum(this.#kho.view(at, this.#kho.readFdtHeader(at)))]);
      }
    }
    const prev = this.previousImage;
    if (prev) {
      const n = root.addChild(PREVIOUS_IMAGE_NODE).setString('file', prev.file).setStringList('argv', prev.argv).setString('cwd', prev.cwd)
        .setCells('nofile', prev.nofile.map((v) => Math.min(v, 0xffffffff)));
      if (prev.env.length) n.setStringList('env', prev.env);
    }
    this.#tree.write(root);
  }

  /** Address of the outgoing "luo-v1" tree (null when not PREPARED/FROZEN). */
  get treeAddress(): number | null {
    return this.#tree.addr;
  }
}
