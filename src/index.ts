/*
 * luo: the public API. Everything a service needs is exported from here; the layers below
 * (src/sys in particular) are internal.
 *
 *   const luo = boot({ name: 'my-service' });   // NORMAL, or UPDATED after a live update
 *   await luo.registerSubsystem({ name: 'cache', prepare, boot, finish, cancel });
 *   luo.preserveFile(1n, someFd);
 *   await luo.prepare();  await luo.reboot();   // exec the next version in place
 */
import { trace } from './config.js';
import { Device, type DeviceOptions } from './device/server.js';
import { pendingKind } from './handover/index.js';
import { builtinHandlers } from './handlers/index.js';
import { collectGarbage, hookSockets } from './handlers/node-internals.js';
import { prebuild } from './handlers/prebuilt.js';
import { readAhead } from './handlers/connection.js';
import { loadBuiltins, settleThreads, warmRunning, warmSuccessor } from './warm.js';
import { Luo, type LuoOptions } from './luo/index.js';

export * from './errors.js';
export { resolveConfig, ENV, type LuoConfig } from './config.js';
export * as fdt from './fdt/index.js';
export { Fdt, FdtNode } from './fdt/index.js';
export { Kho, PAGE_SIZE, HANDOVER_ENV } from './kho/index.js';
export { bootKho, kexec } from './handover/kho.js';
export { selfImage, type Image } from './handover/index.js';
export { EXIT_PANIC } from './panic.js';
export * from './luo/index.js';
export * from './handlers/index.js';
export * from './integrations/index.js';
export { PreservedMap, migrateMap, type StateMemory, type MapOptions, type KeepSpec, type MapStats, type Key as MapKey, type Value as MapValue } from './state/index.js';

/** Boot luo in this image with the built-in file handlers registered. */
export function boot(opts: LuoOptions = {}): Luo {
  // A successor is about to block until the running image hands over: start the control
  // device's worker meanwhile, so its start-up is not part of the pause.
  // It must have started before the running image hears we are ready (and freezes).
  const successor = (opts.enabled ?? true) && pendingKind() === 'successor';
  if (successor) Device.prewarm();
  // net.Socket's hooks, before the service compiles anything (not at the first update).
  if (opts.enabled ?? true) hookSockets();
  return Luo.boot({
    ...opts,
    handlers: [...builtinHandlers(), ...(opts.handlers ?? [])],
    // A running image, after its early send: the freeze's loops, warmed while it serves.
    warm: opts.warm ?? warmRunning,
    ...(successor ? {
      beforeHandover: () => {
        loadBuiltins();
        Device.awaitPrewarm(2000);
        opts.beforeHandover?.();
      },
      // The arena is mapped and viewed (V8 counted a large external buffer and started a
      // collection): finish it now, not in the pause.
      // The connections sent early get their sockets now (adopting one in the pause is then a
      // lookup); the collection below settles what building them allocated.
      prebuild: (fds: number[]) => {
        prebuild(fds);
        warmSuccessor(fds.length);
        opts.prebuild?.(fds);
      },
      // The base blocks of the servers' idle connections, read now (the table at the freeze
      // then names them, and carries only what moved).
      ahead: opts.ahead ?? readAhead,
      // Then the compilations and the collection V8 runs on its own threads: let them finish
      // now, before the running image freezes, not on the cores the pause needs.
      settle: () => {
        collectGarbage();
        trace(`successor: other threads quiet after ${settleThreads().toFixed(1)} ms`);
        opts.settle?.();
      },
    } : {}),
  });
}

/**
 * What boot() will find, without booting: 'successor' (this process was started as the next
 * image of a running service, which serves until this one boots and takes over), 'exec' (an
 * in-place update: the previous image exec'd this one), or null (a cold start). A successor
 * may use the time before boot() to warm up what its first requests will need: it is not in
 * the pause. After an exec, everything before boot() is in the pause.
 */
export function pendingHandover(env: NodeJS.ProcessEnv = process.env): 'successor' | 'exec' | null {
  return pendingKind(env);
}

/**
 * Serve the control device (<rundir>/liveupdate) so that an agent (`luo update`) can drive
 * this service. Call it once the service is ready to be driven: after a live update, only
 * once it has restored what it needs (FINISH releases whatever was not restored).
 */
export function startDevice(luo: Luo, opts: DeviceOptions = {}): Device {
  return Device.start(luo, opts);
}

export { Device, type DeviceOptions } from './device/server.js';
export { DeviceClient } from './device/client.js';
export * as uapi from './uapi/protocol.js';
