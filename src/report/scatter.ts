/**
 * Scatter plot with Pearson r and a least-squares line (projection vs trait score in monitoring,
 * shift vs expression in finetuning experiments). Points may belong to groups, one colour each.
 */
import { PersonaError } from "../errors.js";
import { escapeHtml } from "./escape.js";
import { formatNumber, niceDomain } from "./scale.js";
import { type Box, colorAt, legend, plotFrame, r, svgRoot, text } from "./svg.js";

/** Means and centred sums of squares and products of paired values; null with fewer than 2 pairs. */
function moments(xs: readonly number[], ys: readonly number[]) {
  if (xs.length !== ys.length) throw new PersonaError("E_BAD_INPUT", `paired values needed, got ${xs.length} and ${ys.length}`);
  const n = xs.length;
  if (n < 2) return null;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = xs[i]! - mx;
    const dy = ys[i]! - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  return { mx, my, sxy, sxx, syy };
}

/** Pearson correlation of paired values; null with fewer than 2 pairs or no variance. */
export function pearson(xs: readonly number[], ys: readonly number[]): number | null {
  const m = moments(xs, ys);
  if (!m || m.sxx === 0 || m.syy === 0) return null;
  return Math.max(-1, Math.min(1, m.sxy / Math.sqrt(m.sxx * m.syy)));
}

/** Least-squares y = a + b·x; null with fewer than 2 pairs or when x has no variance. */
export function linearFit(xs: readonly number[], ys: readonly number[]): { intercept: number; slope: number } | null {
  const m = moments(xs, ys);
  if (!m || m.sxx === 0) return null;
  const slope = m.sxy / m.sxx;
  return { intercept: m.my - slope * m.mx, slope };
}

export interface ScatterPoint {
  x: number;
  y: number;
  /** Tooltip text. */
  label?: string;
  /** Colour group, named in the legend. */
  group?: string;
}

export interface ScatterOptions {
  points: readonly ScatterPoint[];
  xLabel: string;
  yLabel: string;
  title?: string;
  /** Draw the least-squares line. Defaults to true. */
  fit?: boolean;
  /** Defaults to 520. */
  width?: number;
  /** Defaults to 360. */
  height?: number;
}

export function scatterPlot(o: ScatterOptions): string {
  const width = o.width ?? 520;
  const height = o.height ?? 360;
  const groups = [...new Set(o.points.map((p) => p.group ?? ""))];
  const legendWidth = groups.length > 1 ? 120 : 0;
  const box: Box = { width, height, margin: { top: 28, right: 16 + legendWidth, bottom: 38, left: 52 } };
  const xs = o.points.map((p) => p.x);
  const ys = o.points.map((p) => p.y);
  const frame = plotFrame({ box, xDomain: niceDomain(xs, 0.05), yDomain: niceDomain(ys, 0.05), xLabel: o.xLabel, yLabel: o.yLabel, title: o.title });
  const parts = [frame.svg];
  const fit = (o.fit ?? true) ? linearFit(xs, ys) : null;
  if (fit) {
    // The part of the line inside the frame: x range cut to where y stays within the y domain.
    let [lo, hi] = frame.x.domain;
    if (fit.slope !== 0) {
      const [ya, yb] = frame.y.domain.map((y) => (y - fit.intercept) / fit.slope) as [number, number];
      lo = Math.max(lo, Math.min(ya, yb));
      hi = Math.min(hi, Math.max(ya, yb));
    }
    const y = (x: number) => frame.y(fit.intercept + fit.slope * x);
    if (lo < hi) parts.push(`<line x1="${r(frame.x(lo))}" x2="${r(frame.x(hi))}" y1="${r(y(lo))}" y2="${r(y(hi))}" class="fit"/>`);
  }
  for (const p of o.points) {
    const color = colorAt(groups.indexOf(p.group ?? ""));
    const tip = `${p.label ? `${p.label}: ` : ""}(${formatNumber(p.x)}, ${formatNumber(p.y)})`;
    parts.push(`<circle cx="${r(frame.x(p.x))}" cy="${r(frame.y(p.y))}" r="3.5" fill="${color}" fill-opacity="0.75"><title>${escapeHtml(tip)}</title></circle>`);
  }
  const rho = pearson(xs, ys);
  parts.push(text(width - box.margin.right, 16, `r = ${rho === null ? "n/a" : rho.toFixed(3)} (n = ${o.points.length})`, `text-anchor="end" class="stat"`));
  if (groups.length > 1) parts.push(legend(width - legendWidth, box.margin.top + 8, groups.map((g, i) => ({ label: g || "(none)", color: colorAt(i), dot: true }))));
  return svgRoot({ width, height }, o.title, parts.join(""));
}
