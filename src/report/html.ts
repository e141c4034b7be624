/**
 * Self-contained HTML report pages: inline CSS, plots as inline SVG, no scripts, no external
 * assets, so a report opens from disk anywhere and can be attached or archived as one file.
 */
import { escapeHtml } from "./escape.js";

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d1d1f;margin:2rem auto;max-width:1100px;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin:2rem 0 .5rem;border-bottom:1px solid #ddd;padding-bottom:.25rem}
.sub{color:#666;margin:0 0 1rem}.plots{display:flex;flex-wrap:wrap;gap:1rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{padding:.2rem .6rem;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f6f6f6}td.low{color:#b00}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.15rem 1rem}dl.meta dt{color:#666}dl.meta dd{margin:0}
details pre{white-space:pre-wrap;background:#f8f8f8;padding:.5rem;border-radius:4px}
svg.plot{background:#fff;border:1px solid #eee;border-radius:4px}
svg .grid{stroke:#eee}svg .axis{stroke:#888}svg .ref{stroke:#999;stroke-dasharray:4 3}svg .fit{stroke:#555;stroke-dasharray:6 3}
svg .tick{font-size:11px;fill:#555}svg .label{font-size:12px;fill:#333}svg .title{font-size:13px;font-weight:600;fill:#222}
svg .stat{font-size:12px;fill:#222}svg .cellval{font-size:10px;fill:#222}svg .cellval.light{fill:#fff}svg .mark{stroke:#b00;stroke-width:1.5}
`;

export interface PageOptions {
  title: string;
  /** One line under the title. Defaults to none. */
  subtitle?: string;
  /** Body HTML, already escaped (build it with the helpers here). */
  body: string;
}

export function htmlPage(o: PageOptions): string {
  return (
    `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${escapeHtml(o.title)}</title><style>${CSS}</style></head><body>` +
    `<h1>${escapeHtml(o.title)}</h1>${o.subtitle ? `<p class="sub">${escapeHtml(o.subtitle)}</p>` : ""}${o.body}</body></html>\n`
  );
}

/** A titled section around body HTML. */
export function section(title: string, body: string): string {
  return `<section><h2>${escapeHtml(title)}</h2>${body}</section>`;
}

/** A cell's text, with an optional class (e.g. `low` for values under a floor). */
export type Cell = string | { text: string; className: string };

export function htmlTable(header: readonly string[], rows: readonly (readonly Cell[])[]): string {
  const td = (c: Cell) => (typeof c === "string" ? `<td>${escapeHtml(c)}</td>` : `<td class="${escapeHtml(c.className)}">${escapeHtml(c.text)}</td>`);
  return (
    `<table><thead><tr>${header.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}</tr></thead>` +
    `<tbody>${rows.map((row) => `<tr>${row.map(td).join("")}</tr>`).join("")}</tbody></table>`
  );
}

/** A definition list of labelled values. */
export function metaList(entries: readonly (readonly [string, string])[]): string {
  return `<dl class="meta">${entries.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join("")}</dl>`;
}

/** Collapsible preformatted text (example replies). */
export function details(summary: string, text: string): string {
  return `<details><summary>${escapeHtml(summary)}</summary><pre>${escapeHtml(text)}</pre></details>`;
}

/** Plots side by side. */
export function plots(...svgs: string[]): string {
  return `<div class="plots">${svgs.join("")}</div>`;
}
