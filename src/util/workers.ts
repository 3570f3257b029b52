/*
 * util/workers: how luo starts its own worker threads (the control device's I/O thread, the
 * guard's watchdog). Constants only: no lifecycle.
 *
 * By default a worker inherits the process's options, the --import preloads among them (those
 * given in NODE_OPTIONS too): luo/register, luo's guard and a service's own instrumentation
 * would each load again in every such thread, slowing its start and holding their files open
 * while it starts (seen: a watchdog terminated at FINISH while it still loaded the guard).
 * These threads run luo's code only: no options, and an environment without NODE_OPTIONS
 * (which a worker given options parses again). Neither thread reads the environment.
 */
export const INTERNAL_WORKER: { execArgv: string[]; env: NodeJS.ProcessEnv } = {
  execArgv: [],
  get env(): NodeJS.ProcessEnv {
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    return env;
  },
};
