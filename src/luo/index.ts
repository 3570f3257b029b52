/*
 * luo: the Live Update Orchestrator core. abi.ts (numbers and names), luo.ts (boot, the
 * transitions, the API), lifecycle.ts (the state and its rules), subsystems.ts (registry and
 * the luo-v1 tree), files.ts (handlers and tokens), file-handler.ts (what a handler is),
 * statefile.ts, selftests.ts.
 */
export { State, Event, stateName, parseEvent, tokenName, STATE_NAMES, EVENT_NAMES, LUO_COMPATIBLE } from './abi.js';
export { Luo, type Subsystem, type LuoOptions, type RebootOpts } from './luo.js';
export type { FileHandler, FileArgs, Frozen, Retrieve, Finished, HandlerMemory, IncomingMemory, FdRef } from './file-handler.js';
export { Selftests, MAX_SUBSYSTEMS } from './selftests.js';
export { DEFAULT_TIMEOUTS, type Timeouts } from './callbacks.js';
