/*
 * luo/statefile: <rundir>/state, the process's /sys/kernel/liveupdate/state.
 *
 * Lifecycle: open() creates the runtime directory (0700) and writes the first state (a
 * successor: off the main thread, see open); write() replaces the file atomically on every
 * transition (write a temporary file in the same directory, then rename over the old one), so
 * a reader sees the old text or the new, never a partial or empty file. Writes never overtake
 * each other: while an asynchronous one is in progress, the next ones queue behind it. The file is mode 0444 and luo has no way to write it from outside.
 * Watchers: watch the directory (fs.watch/inotify report "state" on every rename), or the
 * file, re-arming after each rename. close() removes it (the service is gone: no state).
 * A failure to write is reported as a warning and never fails the transition itself.
 * <rundir>/pid beside it names the process that serves: written with the first state, and
 * again by an image that serves again (it resumed after a failed successor), so that an agent
 * can tell a dead service from a live one.
 */
import fs from 'node:fs';
import path from 'node:path';

export class StateFile {
  readonly path: string;
  #seq = 0;
  /** An asynchronous write in progress: later writes (and close) queue behind it. */
  #pending: Promise<void> | null = null;

  private constructor(file: string) {
    this.path = file;
  }

  /**
   * `deferred`: write the first state off the main thread (the file system calls run in
   * libuv's pool; a successor's boot is inside the pause, and these calls cost it 1-2 ms).
   * The file then keeps the previous image's text ("frozen") for a few milliseconds more.
   */
  static open(rundir: string, initial: string, opts: { deferred?: boolean } = {}): StateFile {
    fs.mkdirSync(rundir, { recursive: true, mode: 0o700 });
    const f = new StateFile(path.join(rundir, 'state'));
    if (opts.deferred) f.#enqueue(async () => {
      await f.#writeAsync(initial);
      await f.#writeAsync(String(process.pid), f.pidPath);
    });
    else {
      f.write(initial);
      f.writePid();
    }
    return f;
  }

  get pidPath(): string {
    return path.join(path.dirname(this.path), 'pid');
  }

  /** <rundir>/pid: this process serves. */
  writePid(): void {
    if (this.#pending) {
      this.#enqueue(() => this.#writeAsync(String(process.pid), this.pidPath));
      return;
    }
    const tmp = this.#tmp();
    try {
      fs.writeFileSync(tmp, `${process.pid}\n`, { mode: 0o444 });
      fs.renameSync(tmp, this.pidPath);
    } catch (e) {
      this.#failed(tmp, e);
    }
  }

  write(text: string): void {
    if (this.#pending) {
      this.#enqueue(() => this.#writeAsync(text));
      return;
    }
    const tmp = this.#tmp();
    try {
      fs.writeFileSync(tmp, `${text}\n`, { mode: 0o444 });
      fs.renameSync(tmp, this.path);
    } catch (e) {
      this.#failed(tmp, e);
    }
  }

  /** Resolves once every write queued so far is on disk (at once when none is). */
  async idle(): Promise<void> {
    while (this.#pending) await this.#pending;
  }

  close(): void {
    if (this.#pending) this.#enqueue(() => Promise.all([fs.promises.rm(this.path, { force: true }), fs.promises.rm(this.pidPath, { force: true })]));
    else {
      fs.rmSync(this.path, { force: true });
      fs.rmSync(this.pidPath, { force: true });
    }
  }

  #tmp(): string {
    return `${this.path}.${process.pid}.${this.#seq++}.tmp`;
  }

  #failed(tmp: string, e: unknown): void {
    try {
      fs.rmSync(tmp, { force: true });
    } catch { /* nothing to clean */ }
    process.emitWarning(`luo: could not write ${this.path}: ${(e as Error).message}`);
  }

  async #writeAsync(text: string, file = this.path): Promise<void> {
    const tmp = this.#tmp();
    try {
      await fs.promises.writeFile(tmp, `${text}\n`, { mode: 0o444 });
      await fs.promises.rename(tmp, file);
    } catch (e) {
      this.#failed(tmp, e);
    }
  }

  /** Run `op` after every write queued before it; the queue empties itself. */
  #enqueue(op: () => Promise<unknown>): void {
    const p: Promise<void> = (this.#pending ?? Promise.resolve()).then(op).then(() => {}, () => {});
    this.#pending = p;
    void p.then(() => {
      if (this.#pending === p) this.#pending = null;
    });
  }
}
