/*
 * luo/statefile: <rundir>/state, the process's /sys/kernel/liveupdate/state.
 *
 * Lifecycle: open() creates the runtime directory (0700) and writes the first state; write()
 * replaces the file atomically on every transition (write a temporary file in the same
 * directory, then rename over the old one), so a reader sees the old text or the new, never a
 * partial or empty file. The file is mode 0444 and luo has no way to write it from outside.
 * Watchers: watch the directory (fs.watch/inotify report "state" on every rename), or the
 * file, re-arming after each rename. close() removes it (the service is gone: no state).
 * A failure to write is reported as a warning and never fails the transition itself.
 */
import fs from 'node:fs';
import path from 'node:path';

export class StateFile {
  readonly path: string;
  #seq = 0;

  private constructor(file: string) {
    this.path = file;
  }

  static open(rundir: string, initial: string): StateFile {
    fs.mkdirSync(rundir, { recursive: true, mode: 0o700 });
    const f = new StateFile(path.join(rundir, 'state'));
    f.write(initial);
    return f;
  }

  write(text: string): void {
    const tmp = `${this.path}.${process.pid}.${this.#seq++}.tmp`;
    try {
      fs.writeFileSync(tmp, `${text}\n`, { mode: 0o444 });
      fs.renameSync(tmp, this.path);
    } catch (e) {
      try {
        fs.rmSync(tmp, { force: true });
      } catch { /* nothing to clean */ }
      process.emitWarning(`luo: could not write ${this.path}: ${(e as Error).message}`);
    }
  }

  close(): void {
    fs.rmSync(this.path, { force: true });
  }
}
