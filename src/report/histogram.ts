/**
 * Histogram (ΔP of training samples in data screening), with a subset — the flagged samples —
 * drawn over the bars in an accent colour, and optional vertical markers (thresholds).
 */
import { PersonaError } from "../errors.js";
import { escapeHtml } from "./escape.js";
import { formatNumber, niceDomain } from "./scale.js";
import { type Box, legend, PALETTE, plotFrame, r, svgRoot, vline } from "./svg.js";
import { extent } from "../util/extent.js";

export interface Bins {
  /** count + 1 edges, ascending. */
  edges: number[];
  counts: number[];
}

/** Equal-width bins over `domain` (default: the values' range); the last bin includes its right edge. */
export function binValues(values: readonly number[], count: number, domain?: readonly [number, number]): Bins {
  if (!Number.isInteger(count) || count < 1) throw new PersonaError("E_BAD_INPUT", `bin count must be a positive integer, got ${count}`);
  const finite = values.filter(Number.isFinite);
  let [lo, hi] = domain ?? extent(finite) ?? [0, 1];
  if (lo === hi) {
    lo -= 0.5;
    hi += 0.5;
  }
  const width = (hi - lo) / count;
  const edges = Array.from({ length: count + 1 }, (_, i) => lo + i * width);
  const counts = new Array<number>(count).fill(0);
  for (const v of finite) {
    if (v < lo || v > hi) continue;
    counts[Math.min(count - 1, Math.floor((v - lo) / width))]!++;
  }
  return { edges, counts };
}

export interface HistogramOptions {
  values: readonly number[];
  xLabel: string;
  title?: string;
  /** Defaults to 20. */
  bins?: number;
  /** A subset of `values` to highlight (e.g. flagged samples). Defaults to none. */
  flagged?: readonly number[];
  /** Legend label of the highlighted subset. Defaults to "flagged". */
  flaggedLabel?: string;
  /** Vertical reference lines. Defaults to none. */
  markers?: readonly { x: number; label: string }[];
  /** Defaults to 560. */
  width?: number;
  /** Defaults to 300. */
  height?: number;
}

export function histogram(o: HistogramOptions): string {
  const width = o.width ?? 560;
  const height = o.height ?? 300;
  const n = o.bins ?? 20;
  const flagged = o.flagged ?? [];
  const legendWidth = flagged.length ? 110 : 0;
  const box: Box = { width, height, margin: { top: 28, right: 16 + legendWidth, bottom: 38, left: 52 } };
  const finite = [...o.values, ...(o.markers ?? []).map((m) => m.x)].filter(Number.isFinite);
  const [lo, hi] = extent(finite) ?? [0, 1];
  const all = binValues(o.values, n, [lo, hi === lo ? lo + 1 : hi]);
  const sub = binValues(flagged, n, [all.edges[0]!, all.edges[n]!]);
  const frame = plotFrame({
    box,
    xDomain: [all.edges[0]!, all.edges[n]!],
    yDomain: niceDomain([0, ...all.counts]).map((v) => Math.max(0, v)) as [number, number],
    xLabel: o.xLabel,
    yLabel: "count",
    title: o.title,
  });
  const parts = [frame.svg];
  const bar = (i: number, count: number, color: string, label: string) => {
    if (count === 0) return;
    const x0 = frame.x(all.edges[i]!);
    const x1 = frame.x(all.edges[i + 1]!);
    const tip = `${label}${formatNumber(all.edges[i]!)} to ${formatNumber(all.edges[i + 1]!)}: ${count}`;
    parts.push(
      `<rect x="${r(x0 + 0.5)}" y="${r(frame.y(count))}" width="${r(Math.max(0.5, x1 - x0 - 1))}" height="${r(frame.y(0) - frame.y(count))}" fill="${color}"><title>${escapeHtml(tip)}</title></rect>`,
    );
  };
  all.counts.forEach((c, i) => bar(i, c, PALETTE[5]!, ""));
  sub.counts.forEach((c, i) => bar(i, c, PALETTE[1]!, `${o.flaggedLabel ?? "flagged"} `));
  for (const m of o.markers ?? []) parts.push(vline(frame, m.x, m.label));
  if (flagged.length) {
    parts.push(legend(width - legendWidth, box.margin.top + 8, [
      { label: "all", color: PALETTE[5]!, dot: true },
      { label: o.flaggedLabel ?? "flagged", color: PALETTE[1]!, dot: true },
    ]));
  }
  return svgRoot({ width, height }, o.title, parts.join(""));
}
