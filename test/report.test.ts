/**
 * Report building blocks: statistics (Pearson r, least squares, bins, ticks), the SVG plots
 * (well-formed, one mark per datum, text escaped) and the sweep report files.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { summarize } from "../src/pipeline/evaluate.js";
import { type SweepResult, pickBestLayer } from "../src/pipeline/sweep.js";
import { escapeHtml } from "../src/report/escape.js";
import { heatmap, rampColor } from "../src/report/heatmap.js";
import { binValues, histogram } from "../src/report/histogram.js";
import { htmlPage, htmlTable } from "../src/report/html.js";
import { lineChart } from "../src/report/line-chart.js";
import { formatNumber, niceDomain, niceTicks } from "../src/report/scale.js";
import { linearFit, pearson, scatterPlot } from "../src/report/scatter.js";
import { sweepHtml, writeSweepReport } from "../src/report/sweep.js";
import { personaError } from "./helpers/errors.js";

const VOID = new Set(["meta", "br", "hr", "img", "input", "link"]);

/**
 * Checks markup is well-formed: every tag closes in order, attributes are name="value" pairs, and
 * no text outside tags holds a raw < or > (all text escaped). Returns the opening tags' names.
 */
function checkMarkup(markup: string): string[] {
  const seen: string[] = [];
  const stack: string[] = [];
  const body = markup.replace(/^<!DOCTYPE html>\s*/, "");
  const tag = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<>]*")*)\s*(\/?)>/g;
  let last = 0;
  for (let m = tag.exec(body); m; m = tag.exec(body)) {
    const between = body.slice(last, m.index);
    assert.doesNotMatch(between, /[<>]/, `raw < or > in text: ${between.slice(0, 80)}`);
    last = tag.lastIndex;
    const [, close, name, , selfClose] = m;
    if (!close) seen.push(name!);
    if (close) assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
    else if (!selfClose && !VOID.has(name!)) stack.push(name!);
  }
  assert.doesNotMatch(body.slice(last), /[<>]/, "raw < or > after the last tag");
  assert.deepEqual(stack, [], "unclosed elements");
  return seen;
}

const count = (tags: string[], name: string) => tags.filter((t) => t === name).length;
const NASTY = `<script>alert("x")</script> & 'q'`;

describe("statistics", () => {
  it("pearson r and least squares", () => {
    assert.equal(pearson([1, 2, 3, 4], [2, 4, 6, 8]), 1);
    assert.equal(pearson([1, 2, 3, 4], [8, 6, 4, 2]), -1);
    assert.equal(pearson([1, 2, 3], [5, 5, 5]), null);
    assert.equal(pearson([1], [1]), null);
    // Hand-computed: x̄ = ȳ = 2.5, Sxy = 4, Sxx = Syy = 5 → r = 0.8.
    assert.ok(Math.abs(pearson([1, 2, 3, 4], [1, 3, 2, 4])! - 0.8) < 1e-12);
    assert.throws(() => pearson([1, 2], [1]), personaError("E_BAD_INPUT"));
    assert.deepEqual(linearFit([0, 1, 2], [1, 3, 5]), { intercept: 1, slope: 2 });
    assert.equal(linearFit([2, 2], [1, 3]), null);
  });

  it("bins values with equal widths, the last bin closed", () => {
    const b = binValues([0, 0.5, 1, 1.5, 2, 4, 4], 4);
    assert.deepEqual(b.edges, [0, 1, 2, 3, 4]);
    assert.deepEqual(b.counts, [2, 2, 1, 2]);
    assert.deepEqual(binValues([3, 3], 2).counts, [0, 2]);
    assert.deepEqual(binValues([-1, 5, 0.2], 2, [0, 1]).counts, [1, 0], "values outside the domain are left out");
  });

  it("takes domains of arrays too long to spread into Math.max", () => {
    const many = Array.from({ length: 500_000 }, (_, i) => i % 1000);
    assert.deepEqual(niceDomain(many), [0, 1000]);
    assert.deepEqual(binValues(many, 2).counts, [250_000, 250_000]);
  });

  it("nice ticks, domains and number labels", () => {
    assert.deepEqual(niceTicks(0, 100), [0, 20, 40, 60, 80, 100]);
    assert.deepEqual(niceTicks(-2, 2, 4), [-2, -1, 0, 1, 2]);
    assert.deepEqual(niceTicks(0.1, 0.35, 5), [0.1, 0.15, 0.2, 0.25, 0.3, 0.35]);
    assert.deepEqual(niceDomain([3, 97]), [0, 100]);
    assert.deepEqual(niceDomain([5, 5]), [4, 6]);
    assert.equal(formatNumber(0.1 + 0.2), "0.3");
    assert.equal(formatNumber(1234.567), "1234.6");
    assert.equal(formatNumber(2e-5), "2.00e-5");
    assert.equal(rampColor(0), "rgb(255,255,217)");
    assert.equal(rampColor(1), "rgb(8,29,88)");
  });

  it("escapes markup characters", () => {
    assert.equal(escapeHtml(NASTY), "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;");
  });
});

describe("SVG plots", () => {
  it("line chart: one path per series, a point per non-null value, gaps for nulls, escaped labels", () => {
    const svg = lineChart({
      series: [
        { label: `layer 1 ${NASTY}`, points: [{ x: 0, y: 10 }, { x: 1, y: 30 }, { x: 2, y: null }, { x: 3, y: 70 }] },
        { label: "layer 2", points: [{ x: 0, y: 12 }, { x: 1, y: 20 }], dashed: true },
      ],
      xLabel: "coef",
      yLabel: "score",
      title: NASTY,
      refLines: [{ y: 50, label: "floor" }],
    });
    const tags = checkMarkup(svg);
    assert.equal(tags[0], "svg");
    assert.equal(count(tags, "circle"), 5);
    assert.equal(count(tags, "script"), 0);
    assert.ok(svg.includes("&lt;script&gt;"));
    const paths = [...svg.matchAll(/<path d="([^"]+)"/g)].map((m) => m[1]!);
    assert.equal(paths.length, 2);
    assert.equal((paths[0]!.match(/M/g) ?? []).length, 2, "a null y starts a new segment");
    assert.match(svg, /stroke-dasharray="5 3"/);
  });

  it("heatmap: a cell per value, crossed-out marked cells, empty cells for nulls", () => {
    const svg = heatmap({
      rowLabels: ["1", "2"],
      colLabels: ["0.5", "1", NASTY],
      values: [[10, 50, 90], [null, 20, 100]],
      marked: [[false, true, false], [false, false, true]],
      markLabel: "coherence < 50",
      domain: [0, 100],
      xLabel: "coef",
      yLabel: "layer",
      title: "evil",
    });
    const tags = checkMarkup(svg);
    assert.equal(count(tags, "rect") - 8 - 1, 6, "6 cells besides the 8 key swatches and the mark swatch");
    assert.equal((svg.match(/class="mark"/g) ?? []).length, 3, "2 marked cells + legend");
    assert.match(svg, /fill="#eeeeee"/);
    assert.match(svg, /coherence &lt; 50/);
    assert.match(svg, new RegExp(`fill="${rampColor(0.9).replace(/[()]/g, "\\$&")}"`));
  });

  it("scatter: a dot per point, r in the corner, the fit line", () => {
    const points = [1, 2, 3, 4, 5].map((x, i) => ({ x, y: [2, 4, 5, 4, 5][i]!, label: `p${i}`, group: i < 3 ? "a" : "b" }));
    const svg = scatterPlot({ points, xLabel: "projection", yLabel: "evil score", title: "monitor" });
    const tags = checkMarkup(svg);
    assert.equal(count(tags, "circle"), 5 + 2, "points + legend dots");
    const r = pearson(points.map((p) => p.x), points.map((p) => p.y))!;
    assert.ok(svg.includes(`r = ${r.toFixed(3)} (n = 5)`));
    assert.match(svg, /class="fit"/);
    assert.match(scatterPlot({ points: [{ x: 1, y: 1 }], xLabel: "x", yLabel: "y" }), /r = n\/a/);
  });

  it("histogram: bars for non-empty bins, flagged subset over them, markers", () => {
    const values = [0, 0.1, 0.2, 1, 1.1, 2, 3, 3.5, 4];
    const svg = histogram({ values, bins: 4, flagged: [3.5, 4], markers: [{ x: 3.2, label: "top-2" }], xLabel: "ΔP" });
    const tags = checkMarkup(svg);
    const bars = [...svg.matchAll(/<rect [^>]*fill="([^"]+)"/g)].map((m) => m[1]);
    assert.equal(bars.length, 4 + 1, "4 non-empty bins + 1 flagged bin");
    assert.equal(count(tags, "circle"), 2, "legend");
    assert.match(svg, /top-2/);
    assert.ok(svg.includes("ΔP"));
  });
});

describe("sweep report", () => {
  const stats = (m: number) => summarize([m - 5, m + 5]);
  const grid = [1, 2].flatMap((layer) => [0, 2, 4].map((coef) => ({ layer, coef, traitScore: stats(10 + coef * layer * layer * 5), coherence: stats(90 - coef * layer * layer * 5) })));
  const picked = pickBestLayer(grid, 10, 50);
  const result: SweepResult = { grid, baseline: { traitScore: stats(10), coherence: stats(90) }, coherenceFloor: 50, positions: "response", promptStateRatio: null, ...picked };
  const meta = { trait: `ev<i>l & co`, model: "tiny", vectors: "v.safetensors#response_avg", judge: "demo", questions: 2, samplesPerQuestion: 2, temperature: 1, maxTokens: 8, seed: 0, createdAt: "2025-01-01T00:00:00Z" };

  it("is one well-formed, self-contained HTML page with plots and escaped text", () => {
    const html = sweepHtml(result, meta);
    assert.match(html, /^<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">/);
    const tags = checkMarkup(html);
    assert.equal(count(tags, "svg"), 4, "two steering curves, two heatmaps");
    assert.equal(count(tags, "script"), 0);
    assert.equal(count(tags, "i"), 0, "the trait name's <i> is text, not markup");
    assert.ok(html.includes("ev&lt;i&gt;l &amp; co"));
    assert.doesNotMatch(html, /(src|href)="/, "no external assets");
    // Layer 2 moves most (coef 2: +40) before its coherence (coef 4: 10) drops under the floor.
    assert.equal(picked.bestLayer, 2);
    assert.ok(html.includes("layer 2 (coefficient 2, change 40)"));
    assert.match(html, /<td class="low">/);
  });

  it("writes sweep.html and sweep.json (the CLI's contract)", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "persona-report-"));
    try {
      const files = await writeSweepReport(path.join(dir, "out"), result, meta);
      checkMarkup(await readFile(files.html, "utf8"));
      const j = JSON.parse(await readFile(files.json, "utf8"));
      assert.equal(j.best_layer, 2);
      assert.equal(j.best_coef, 2);
      assert.equal(j.grid.length, 6);
      assert.deepEqual(j.grid[4], { layer: 2, coef: 2, trait_score: { mean: 50, std: Math.sqrt(50), n: 2, nulls: 0 }, coherence: { mean: 50, std: Math.sqrt(50), n: 2, nulls: 0 } });
      assert.equal(j.baseline.trait_score.mean, 10);
      assert.equal(j.coherence_floor, 50);
      assert.equal(j.trait, meta.trait);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("html helpers escape cells", () => {
    const t = htmlTable(["a<b"], [[NASTY], [{ text: "x", className: "low" }]]);
    checkMarkup(t);
    assert.ok(t.includes("a&lt;b"));
    checkMarkup(htmlPage({ title: NASTY, subtitle: NASTY, body: t }));
  });
});
