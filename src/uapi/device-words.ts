/*
 * uapi/device-words: the control device's shared words, a SharedArrayBuffer read and written
 * by the main thread (device/server.ts), the device's I/O thread (device/worker.ts) and, in a
 * next image exec'd in place, the guard's watchdog thread, which says from them where a hung
 * image's device stood. Constants and a reader; no lifecycle (the buffer lives as long as the
 * device's thread).
 */

/** Int32 words. */
export const W = {
  /** 0: a request is with the main thread; 1: its reply is posted; 2: the reply is sent. */
  REPLY: 0,
  /** 1: the I/O thread should stop. */
  STOP: 1,
  /** 1: the I/O thread has loaded. */
  STARTED: 2,
  /** 1: a prewarmed thread has been given its socket. */
  GIVEN: 3,
  /** 1: a new listening socket waits on the port. */
  RELISTEN: 4,
  /** Requests the I/O thread has handed to the main thread. */
  TAKEN: 5,
  /** Replies it has sent back. */
  ANSWERED: 6,
} as const;
const WORDS = 8;
/** Float64 slots, after the words: Date.now() at the last request taken, the last reply sent. */
const T_TAKEN = 0;
const T_ANSWERED = 1;
export const DEVICE_WORDS_BYTES = WORDS * 4 + 2 * 8;

/** The two views of the buffer: every reader and writer makes them here. */
export interface DeviceWords { flag: Int32Array; times: Float64Array }

export function deviceWords(sab: SharedArrayBuffer): DeviceWords {
  return { flag: new Int32Array(sab, 0, WORDS), times: new Float64Array(sab, WORDS * 4, 2) };
}

/** The I/O thread took a request (handed it to the main thread). */
export function noteTaken(w: DeviceWords): void {
  w.times[T_TAKEN] = Date.now();
  Atomics.add(w.flag, W.TAKEN, 1);
}

/** The I/O thread sent a reply. */
export function noteAnswered(w: DeviceWords): void {
  w.times[T_ANSWERED] = Date.now();
  Atomics.add(w.flag, W.ANSWERED, 1);
}

/** Where the device stood, in a few words for a report ("its control device …"). */
export function describeDevice(sab: SharedArrayBuffer, now = Date.now()): string {
  const w = deviceWords(sab);
  const s = (t: number): string => `${((now - t) / 1000).toFixed(1)} s`;
  if (Atomics.load(w.flag, W.STARTED) === 0) return 'its control device\'s thread had not started';
  const taken = Atomics.load(w.flag, W.TAKEN);
  const answered = Atomics.load(w.flag, W.ANSWERED);
  if (taken === 0) return 'its control device had had no request';
  if (taken > answered) return `its control device had waited ${s(w.times[T_TAKEN]!)} for the main thread to answer a request (${answered} answered before)`;
  return `its control device had answered ${answered} request${answered === 1 ? '' : 's'}, the last ${s(w.times[T_ANSWERED]!)} before`;
}
