/**
 * Heatmap of a rows × columns grid (layers × coefficients), value printed in each cell; marked
 * cells (e.g. coherence below the floor) are crossed out and faded.
 */
import { escapeHtml } from "./escape.js";
import { formatNumber } from "./scale.js";
import { r, svgRoot, text } from "./svg.js";
import { extent } from "../util/extent.js";

export interface HeatmapOptions {
  rowLabels: readonly string[];
  colLabels: readonly string[];
  /** values[row][col]; null draws an empty cell. */
  values: readonly (readonly (number | null)[])[];
  xLabel: string;
  yLabel: string;
  title?: string;
  /** Colour range. Defaults to the values' min and max. */
  domain?: readonly [number, number];
  /** marked[row][col]: cross the cell out. Defaults to none. */
  marked?: readonly (readonly boolean[])[];
  /** Legend text for marked cells. Defaults to "marked". */
  markLabel?: string;
  /** Defaults to 44. */
  cellWidth?: number;
  /** Defaults to 26. */
  cellHeight?: number;
}

/** Sequential colour ramp (light yellow → green → dark blue), t in [0, 1]. */
const STOPS: readonly [number, number, number][] = [
  [255, 255, 217],
  [127, 205, 187],
  [29, 145, 192],
  [8, 29, 88],
];

export function rampColor(t: number): string {
  const c = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(c));
  const f = c - i;
  const [a, b] = [STOPS[i]!, STOPS[i + 1]!];
  const mix = (k: number) => Math.round(a[k]! + (b[k]! - a[k]!) * f);
  return `rgb(${mix(0)},${mix(1)},${mix(2)})`;
}

export function heatmap(o: HeatmapOptions): string {
  const cw = o.cellWidth ?? 44;
  const ch = o.cellHeight ?? 26;
  const left = 64;
  const top = 30;
  const nRows = o.rowLabels.length;
  const nCols = o.colLabels.length;
  const width = left + nCols * cw + 150;
  const height = top + nRows * ch + 44;
  const flat = o.values.flat().filter((v): v is number => v !== null && Number.isFinite(v));
  const [lo, hi] = o.domain ?? extent(flat) ?? [0, 1];
  const t = (v: number) => (hi === lo ? 0.5 : (v - lo) / (hi - lo));
  const parts: string[] = [];
  if (o.title) parts.push(text(left, 16, o.title, `class="title"`));
  let anyMarked = false;
  for (let i = 0; i < nRows; i++) {
    const y = top + i * ch;
    parts.push(text(left - 6, y + ch / 2 + 4, o.rowLabels[i]!, `text-anchor="end" class="tick"`));
    for (let j = 0; j < nCols; j++) {
      const x = left + j * cw;
      const v = o.values[i]?.[j] ?? null;
      const marked = o.marked?.[i]?.[j] ?? false;
      anyMarked ||= marked;
      const fill = v === null ? "#eeeeee" : rampColor(t(v));
      const tip = `${o.yLabel} ${o.rowLabels[i]}, ${o.xLabel} ${o.colLabels[j]}: ${v === null ? "no score" : formatNumber(v)}${marked ? ` (${o.markLabel ?? "marked"})` : ""}`;
      parts.push(
        `<rect x="${r(x)}" y="${r(y)}" width="${cw}" height="${ch}" fill="${fill}"${marked ? ` fill-opacity="0.35"` : ""} class="cell"><title>${escapeHtml(tip)}</title></rect>`,
      );
      if (v !== null) {
        const dark = !marked && t(v) > 0.55;
        parts.push(text(x + cw / 2, y + ch / 2 + 4, formatNumber(Math.round(v * 10) / 10), `text-anchor="middle" class="cellval${dark ? " light" : ""}"`));
      }
      if (marked) parts.push(`<path d="M${r(x + 3)} ${r(y + 3)}L${r(x + cw - 3)} ${r(y + ch - 3)}" class="mark"/>`);
    }
  }
  const gridBottom = top + nRows * ch;
  o.colLabels.forEach((c, j) => parts.push(text(left + j * cw + cw / 2, gridBottom + 14, c, `text-anchor="middle" class="tick"`)));
  parts.push(text(left + (nCols * cw) / 2, gridBottom + 34, o.xLabel, `text-anchor="middle" class="label"`));
  parts.push(text(12, top + (nRows * ch) / 2, o.yLabel, `text-anchor="middle" class="label" transform="rotate(-90 12 ${r(top + (nRows * ch) / 2)})"`));
  // Colour key.
  const kx = left + nCols * cw + 20;
  const steps = 8;
  for (let s = 0; s < steps; s++) {
    parts.push(`<rect x="${kx}" y="${r(top + s * 12)}" width="14" height="12" fill="${rampColor(1 - s / (steps - 1))}"/>`);
  }
  parts.push(text(kx + 20, top + 9, formatNumber(hi), `class="tick"`));
  parts.push(text(kx + 20, top + steps * 12, formatNumber(lo), `class="tick"`));
  if (anyMarked) {
    const my = top + steps * 12 + 18;
    parts.push(`<rect x="${kx}" y="${my}" width="14" height="12" fill="#999999" fill-opacity="0.35"/><path d="M${kx + 1} ${my + 1}L${kx + 13} ${my + 11}" class="mark"/>`);
    parts.push(text(kx + 20, my + 10, o.markLabel ?? "marked", `class="tick"`));
  }
  return svgRoot({ width, height }, o.title, parts.join(""));
}
