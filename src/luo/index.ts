/*
 * luo: the Live Update Orchestrator core. abi.ts (numbers and names), luo.ts (state machine,
 * subsystems, reboot), files.ts (handlers and tokens), statefile.ts, selftests.ts.
 */
export { State, Event, stateName, parseEvent, tokenName, STATE_NAMES, EVENT_NAMES, LUO_COMPATIBLE } from './abi.js';
export { Luo, type Subsystem, type LuoOptions } from './luo.js';
export { type FileHandler, type FileArgs } from './files.js';
export { Selftests, MAX_SUBSYSTEMS } from './selftests.js';
export { DEFAULT_TIMEOUTS, type Timeouts } from './callbacks.js';
