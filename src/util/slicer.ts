/*
 * util/slicer: a pass over many items (10 000 connections, fds, refs) in slices of a few
 * milliseconds, the event loop serving between them, so that no pass before the freeze is
 * one stall as long as the pause. Lifecycle: slicer(ms) per pass; due(i) for each item i
 * returns, at a slice's end, the turn to await (one setImmediate: timers and I/O run before
 * it resolves), else null. Nothing to undo: an abandoned pass just stops calling it.
 */

/** The longest a pass before the freeze holds the event loop at a time (ms), unless its
 *  caller says otherwise. */
export const SLICE_MS = 2;

/**
 * call due(i) for each item i; at a slice's end it returns the turn to await, else null. The
 * clock is read every 32 items (code that runs once per process is slow: 256 items were
 * 6-8 ms here, more than a slice).
 */
export function slicer(ms = SLICE_MS): (i: number) => Promise<void> | null {
  let start = performance.now();
  return (i) => {
    if ((i & 31) !== 31 || performance.now() - start < ms) return null;
    return new Promise<void>((r) => setImmediate(() => {
      start = performance.now();
      r();
    }));
  };
}
