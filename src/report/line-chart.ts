/** Line chart (steering curves: score vs coefficient, one line per layer). A null y breaks the line. */
import { escapeHtml } from "./escape.js";
import { formatNumber, niceDomain } from "./scale.js";
import { type Box, colorAt, hline, legend, plotFrame, r, svgRoot } from "./svg.js";

export interface LinePoint {
  x: number;
  y: number | null;
}

export interface LineSeries {
  label: string;
  points: readonly LinePoint[];
  /** Defaults to the palette colour of the series' position. */
  color?: string;
  /** Defaults to false. */
  dashed?: boolean;
}

export interface LineChartOptions {
  series: readonly LineSeries[];
  xLabel: string;
  yLabel: string;
  title?: string;
  /** Defaults to the data's nice range. */
  yDomain?: readonly [number, number];
  /** Horizontal reference lines (baseline, coherence floor). Defaults to none. */
  refLines?: readonly { y: number; label: string }[];
  /** Defaults to 600. */
  width?: number;
  /** Defaults to 320. */
  height?: number;
}

export function lineChart(o: LineChartOptions): string {
  const width = o.width ?? 600;
  const height = o.height ?? 320;
  const legendWidth = 120;
  const box: Box = { width, height, margin: { top: 28, right: legendWidth + 12, bottom: 38, left: 52 } };
  const xs = o.series.flatMap((s) => s.points.map((p) => p.x));
  const ys = [...o.series.flatMap((s) => s.points.flatMap((p) => (p.y === null ? [] : [p.y]))), ...(o.refLines ?? []).map((l) => l.y)];
  const xDomain = niceDomain(xs);
  const xTicks = [...new Set(xs)].sort((a, b) => a - b);
  const frame = plotFrame({
    box,
    xDomain: xTicks.length > 1 ? [xTicks[0]!, xTicks[xTicks.length - 1]!] : xDomain,
    yDomain: o.yDomain ?? niceDomain(ys),
    xLabel: o.xLabel,
    yLabel: o.yLabel,
    title: o.title,
    xTicks: xTicks.length <= 12 ? xTicks : undefined,
  });
  const parts = [frame.svg];
  for (const l of o.refLines ?? []) parts.push(hline(frame, l.y, l.label));
  o.series.forEach((s, i) => {
    const color = s.color ?? colorAt(i);
    const dash = s.dashed ? ` stroke-dasharray="5 3"` : "";
    const points = [...s.points].sort((a, b) => a.x - b.x);
    // One path with a move-to after each gap.
    let d = "";
    let pen = false;
    for (const p of points) {
      if (p.y === null) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${r(frame.x(p.x))} ${r(frame.y(p.y))}`;
      pen = true;
    }
    if (d) parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`);
    for (const p of points) {
      if (p.y === null) continue;
      parts.push(
        `<circle cx="${r(frame.x(p.x))}" cy="${r(frame.y(p.y))}" r="3" fill="${color}"><title>${escapeHtml(`${s.label}: ${formatNumber(p.x)} → ${formatNumber(p.y)}`)}</title></circle>`,
      );
    }
  });
  parts.push(legend(width - legendWidth, box.margin.top + 8, o.series.map((s, i) => ({ label: s.label, color: s.color ?? colorAt(i), dashed: s.dashed }))));
  return svgRoot({ width, height }, o.title, parts.join(""));
}
