/** A reproducible vector of `n` values in [-1, 1) from `seed` (a linear congruential generator). */
export function randomVector(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return (s / 2 ** 32 - 0.5) * 2;
  });
}
