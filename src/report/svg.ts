/**
 * Shared pieces of the report plots: the SVG root, a plot frame with axes, ticks, grid and
 * labels, a legend, and the colour palette. Every text passes through `escapeHtml`.
 */
import { escapeHtml } from "./escape.js";
import { formatNumber, linearScale, niceTicks, type Scale } from "./scale.js";

/** Colour-blind-safe categorical palette (Okabe–Ito). */
export const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"];

export function colorAt(i: number): string {
  return PALETTE[i % PALETTE.length]!;
}

export interface Box {
  width: number;
  height: number;
  margin: { top: number; right: number; bottom: number; left: number };
}

export function svgRoot(box: Pick<Box, "width" | "height">, title: string | undefined, content: string): string {
  const label = title ? ` aria-label="${escapeHtml(title)}"` : "";
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${box.width} ${box.height}" width="${box.width}" height="${box.height}" role="img"${label} class="plot">` +
    content +
    `</svg>`
  );
}

export function text(x: number, y: number, content: string, attrs = ""): string {
  return `<text x="${r(x)}" y="${r(y)}"${attrs ? ` ${attrs}` : ""}>${escapeHtml(content)}</text>`;
}

/** Rounds coordinates to 0.01 px so the markup stays short. */
export function r(v: number): string {
  return String(Math.round(v * 100) / 100);
}

export interface Frame {
  x: Scale;
  y: Scale;
  /** Axes, grid lines, tick labels, axis labels and title. */
  svg: string;
}

export interface FrameOptions {
  box: Box;
  xDomain: readonly [number, number];
  yDomain: readonly [number, number];
  xLabel: string;
  yLabel: string;
  title?: string;
  /** Tick positions on x. Defaults to nice ticks. */
  xTicks?: readonly number[];
}

export function plotFrame(o: FrameOptions): Frame {
  const { width, height, margin } = o.box;
  const x0 = margin.left;
  const x1 = width - margin.right;
  const y0 = height - margin.bottom;
  const y1 = margin.top;
  const x = linearScale(o.xDomain, [x0, x1]);
  const y = linearScale(o.yDomain, [y0, y1]);
  const parts: string[] = [];
  for (const t of niceTicks(o.yDomain[0], o.yDomain[1])) {
    parts.push(`<line x1="${x0}" x2="${x1}" y1="${r(y(t))}" y2="${r(y(t))}" class="grid"/>`);
    parts.push(text(x0 - 6, y(t) + 4, formatNumber(t), `text-anchor="end" class="tick"`));
  }
  for (const t of o.xTicks ?? niceTicks(o.xDomain[0], o.xDomain[1])) {
    parts.push(`<line x1="${r(x(t))}" x2="${r(x(t))}" y1="${y0}" y2="${y0 + 4}" class="axis"/>`);
    parts.push(text(x(t), y0 + 16, formatNumber(t), `text-anchor="middle" class="tick"`));
  }
  parts.push(`<line x1="${x0}" x2="${x1}" y1="${y0}" y2="${y0}" class="axis"/>`);
  parts.push(`<line x1="${x0}" x2="${x0}" y1="${y0}" y2="${y1}" class="axis"/>`);
  parts.push(text((x0 + x1) / 2, height - 6, o.xLabel, `text-anchor="middle" class="label"`));
  parts.push(text(14, (y0 + y1) / 2, o.yLabel, `text-anchor="middle" class="label" transform="rotate(-90 14 ${r((y0 + y1) / 2)})"`));
  if (o.title) parts.push(text(x0, 16, o.title, `class="title"`));
  return { x, y, svg: parts.join("") };
}

export interface LegendEntry {
  label: string;
  color: string;
  dashed?: boolean;
  /** Draw a dot instead of a line. */
  dot?: boolean;
}

/** A vertical legend whose top-left corner is (x, y). */
export function legend(x: number, y: number, entries: readonly LegendEntry[]): string {
  return entries
    .map((e, i) => {
      const cy = y + i * 16;
      const mark = e.dot
        ? `<circle cx="${r(x + 9)}" cy="${r(cy)}" r="4" fill="${e.color}"/>`
        : `<line x1="${r(x)}" x2="${r(x + 18)}" y1="${r(cy)}" y2="${r(cy)}" stroke="${e.color}" stroke-width="2"${e.dashed ? ` stroke-dasharray="5 3"` : ""}/>`;
      return mark + text(x + 24, cy + 4, e.label, `class="tick"`);
    })
    .join("");
}

/** A horizontal reference line across the plot (baseline, floor). */
export function hline(frame: Frame, v: number, label: string, cls = "ref"): string {
  const [x0, x1] = frame.x.domain.map(frame.x);
  return `<line x1="${r(x0!)}" x2="${r(x1!)}" y1="${r(frame.y(v))}" y2="${r(frame.y(v))}" class="${cls}"/>` + text(x1! - 4, frame.y(v) - 4, label, `text-anchor="end" class="tick"`);
}

/** A vertical reference line across the plot (threshold, cut-off). */
export function vline(frame: Frame, v: number, label: string, cls = "ref"): string {
  const [y0, y1] = frame.y.domain.map(frame.y);
  return `<line x1="${r(frame.x(v))}" x2="${r(frame.x(v))}" y1="${r(y0!)}" y2="${r(y1!)}" class="${cls}"/>` + text(frame.x(v) + 4, y1! + 10, label, `class="tick"`);
}
