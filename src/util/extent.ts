/**
 * Min and max over arrays of any length. `Math.max(...values)` passes every value as an argument
 * and overflows the stack somewhere past ~100k values (seen at 500k jobs), so these loop instead.
 */

/** The smallest and largest value, or undefined for none. */
export function extent(values: Iterable<number>): [number, number] | undefined {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi ? [lo, hi] : undefined;
}

/** The largest `f(item)`; -Infinity for no items. */
export function maxOf<T>(items: Iterable<T>, f: (item: T) => number): number {
  let hi = -Infinity;
  for (const item of items) hi = Math.max(hi, f(item));
  return hi;
}
