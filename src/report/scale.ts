/** Linear scales, "nice" axis ticks and compact number labels for the SVG plots. */
import { extent } from "../util/extent.js";

export interface Scale {
  domain: readonly [number, number];
  (v: number): number;
}

/** Maps [d0, d1] onto [r0, r1]; a zero-width domain maps to the middle of the range. */
export function linearScale(domain: readonly [number, number], range: readonly [number, number]): Scale {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  const f = ((v: number) => (d1 === d0 ? (r0 + r1) / 2 : r0 + ((v - d0) / (d1 - d0)) * (r1 - r0))) as Scale;
  (f as { domain: readonly [number, number] }).domain = domain;
  return f;
}

/** Ticks at 1, 2 or 5 × 10^k steps, about `count` of them, covering [min, max]. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [];
  if (min === max) return [min];
  const raw = (max - min) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

/** A domain widened to nice tick boundaries, with a unit of room when all values are equal. */
export function niceDomain(values: readonly number[], pad = 0): [number, number] {
  const range = extent(values.filter(Number.isFinite));
  if (!range) return [0, 1];
  let [lo, hi] = range;
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const span = hi - lo;
  lo -= span * pad;
  hi += span * pad;
  const ticks = niceTicks(lo, hi);
  const step = ticks.length > 1 ? ticks[1]! - ticks[0]! : span;
  return [Math.floor(lo / step) * step, Math.ceil(hi / step) * step];
}

/** Up to 3 significant decimals, no trailing zeros: 0.5, 12.3, 1e+6 stays readable. */
export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v !== 0 && (Math.abs(v) >= 1e6 || Math.abs(v) < 1e-3)) return v.toExponential(2);
  return String(Number(v.toFixed(Math.abs(v) >= 100 ? 1 : 3)));
}
