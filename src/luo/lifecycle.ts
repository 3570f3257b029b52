/*
 * luo/lifecycle: the global state and the rules of who may act in it (the kernel's
 * luo_state and its rwsem). Internal to src/luo: the public API exposes the state, never
 * these checks.
 *
 * Lifecycle: made in UNDEFINED → start(state) once boot knows what it found (NORMAL,
 * UPDATED; UNDEFINED stays when luo is disabled), with the state file opened → set() on every
 * transition (the file is rewritten, onChange told) → close() when the service goes away.
 * Transitions run one at a time through exclusive() (queued, like the rwsem's writers); while
 * one runs, require*() raise EBUSY instead of waiting. A transition that throws leaves the
 * queue usable.
 */
import { fail, type ErrnoName } from '../errors.js';
import { State, stateName } from './abi.js';
import { StateFile } from './statefile.js';

export class Lifecycle {
  readonly enabled: boolean;
  #state: State = State.UNDEFINED;
  #file: StateFile | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  #transition: string | null = null;
  #started = false;
  readonly #onChange: (to: State, from: State) => void;

  constructor(enabled: boolean, onChange: (to: State, from: State) => void) {
    this.enabled = enabled;
    this.#onChange = onChange;
  }

  /** The state boot found; writes the first state file when asked (`deferred`: off the main thread). */
  start(state: State, stateFile: { rundir: string; deferred: boolean } | null): void {
    this.#state = state;
    this.#started = true;
    if (stateFile) this.#file = StateFile.open(stateFile.rundir, stateName(state), { deferred: stateFile.deferred });
  }

  get state(): State {
    return this.#state;
  }

  get name(): string {
    return stateName(this.#state);
  }

  get stateFilePath(): string | null {
    return this.#file?.path ?? null;
  }

  set(s: State): void {
    if (s === this.#state) return;
    const from = this.#state;
    this.#state = s;
    this.#file?.write(stateName(s));
    this.#onChange(s, from);
  }

  /** This process serves (again): <rundir>/pid says so. */
  announcePid(): void {
    this.#file?.writePid();
  }

  /** Resolves once every state-file write so far is on disk. */
  async settled(): Promise<void> {
    await this.#file?.idle();
  }

  close(): void {
    this.#file?.close();
    this.#file = null;
  }

  requireEnabled(): void {
    if (!this.enabled) throw fail('EOPNOTSUPP', 'live update is disabled (LUO_ENABLE=0)');
  }

  /** EBUSY (or `errno`) unless the state is one of `allowed` and no transition is running. */
  requireState(what: string, a: State, b?: State, errno: ErrnoName = 'EBUSY'): void {
    if (this.#transition) throw fail('EBUSY', `cannot ${what} while ${this.#transition} is in progress`);
    if (this.#state !== a && this.#state !== b) {
      const allowed = [a, b].filter((x) => x !== undefined).map((x) => stateName(x!)).join(' or ');
      throw fail(errno, `cannot ${what} in state ${this.name} (only in ${allowed})`);
    }
  }

  /**
   * Registration is allowed in NORMAL and UPDATED, and always when luo is disabled (as the
   * kernel's CONFIG_LIVEUPDATE=n stubs: the service's code runs the same either way), and at
   * boot before the handover is read (boot's own handlers).
   */
  requireRegistrable(what: string): void {
    if (this.enabled && this.#started) this.requireState(what, State.NORMAL, State.UPDATED);
  }

  /** Run a transition exclusively (transitions queue behind each other). */
  exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
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
}
