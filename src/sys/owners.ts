/*
 * sys/owners: fds that an object owns in this process (a net.Socket built on a handed-over
 * fd before it is adopted: handlers/prebuilt.ts). Closing such an fd behind its owner's back
 * would leave the owner holding a number that the next open() reuses, and its own close would
 * then close somebody else's file; so every place that closes a carried fd calls closeFd(),
 * which asks the owner to close it when there is one.
 * Lifecycle: own(fd, close) → disown(fd) (the owner was adopted: it closes its fd itself
 * from then on) or closeFd(fd) (the owner's close runs once, and the entry goes).
 */
import { close } from './libc.js';

const owners = new Map<number, () => void>();

/** `fd` is owned by something that closes it with `closeIt`. */
export function own(fd: number, closeIt: () => void): void {
  owners.set(fd, closeIt);
}

/** The owner of `fd` no longer needs the registry (it was adopted); true if it had one. */
export function disown(fd: number): boolean {
  return owners.delete(fd);
}

/** Close a carried fd: through its owner when it has one, else close(2). */
export function closeFd(fd: number): void {
  const c = owners.get(fd);
  if (c) {
    owners.delete(fd);
    c();
    return;
  }
  close(fd);
}
