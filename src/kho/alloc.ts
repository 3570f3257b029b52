/*
 * kho/alloc: a page allocator over the arena's address space.
 *
 * Lifecycle: starts with every page free (cold boot) or with the handed-over preserved pages
 * reserved (boot after an update). alloc() takes the first fit; reserve() takes specific pages
 * out of the free set whatever their state (preservation uses it, so a preserved page is never
 * handed out); free() returns pages and merges neighbours. Freeing a page that is already free
 * raises EINVAL and changes nothing. Free space is a sorted list of disjoint extents.
 */
import { fail } from '../errors.js';

export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;

interface Extent { start: number; end: number } // pages, [start, end)

export class PageAllocator {
  readonly pages: number;
  #free: Extent[];

  constructor(pages: number) {
    this.pages = pages;
    this.#free = pages > 0 ? [{ start: 0, end: pages }] : [];
  }

  /** Index of the first extent whose end is > page. */
  #find(page: number): number {
    let lo = 0;
    let hi = this.#free.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#free[mid]!.end <= page) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Allocate `n` pages aligned to `align` pages; returns the first page. ENOMEM when full. */
  alloc(n: number, align = 1): number {
    if (!Number.isSafeInteger(n) || n <= 0) throw fail('EINVAL', `allocation of ${n} pages`);
    for (const e of this.#free) {
      const start = Math.ceil(e.start / align) * align;
      if (start + n <= e.end) {
        this.reserve(start, n);
        return start;
      }
    }
    throw fail('ENOMEM', `arena has no ${n} free contiguous pages`);
  }

  /** Take pages [start, start+n) out of the free set, whatever part of them is free. */
  reserve(start: number, n: number): void {
    const end = start + n;
    let i = this.#find(start);
    while (i < this.#free.length && this.#free[i]!.start < end) {
      const e = this.#free[i]!;
      const left = e.start < start ? { start: e.start, end: start } : null;
      const right = e.end > end ? { start: end, end: e.end } : null;
      const repl = [left, right].filter((x): x is Extent => x !== null);
      this.#free.splice(i, 1, ...repl);
      i += repl.length;
      if (right) break;
    }
  }

  /** Return pages to the free set. EINVAL if any of them is already free. */
  free(start: number, n: number): void {
    const end = start + n;
    if (start < 0 || end > this.pages || n <= 0) throw fail('EINVAL', `free of pages [${start}, ${end}) outside the arena`);
    const i = this.#find(start);
    const next = this.#free[i];
    if (next && next.start < end) throw fail('EINVAL', `free of pages [${start}, ${end}) that are already free`);
    const prev = this.#free[i - 1];
    const mergePrev = prev !== undefined && prev.end === start;
    const mergeNext = next !== undefined && next.start === end;
    if (mergePrev && mergeNext) {
      prev.end = next.end;
      this.#free.splice(i, 1);
    } else if (mergePrev) prev.end = end;
    else if (mergeNext) next.start = start;
    else this.#free.splice(i, 0, { start, end });
  }

  isFree(page: number): boolean {
    const e = this.#free[this.#find(page)];
    return e !== undefined && e.start <= page;
  }

  /** The allocated (or reserved) extents, [first page, pages], in order. */
  usedExtents(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    let at = 0;
    for (const e of this.#free) {
      if (e.start > at) out.push([at, e.start - at]);
      at = e.end;
    }
    if (at < this.pages) out.push([at, this.pages - at]);
    return out;
  }

  get freePages(): number {
    return this.#free.reduce((n, e) => n + e.end - e.start, 0);
  }
}
