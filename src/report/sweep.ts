/**
 * The steering sweep report: `sweep.json` (the same stable contract `persona sweep --json`
 * prints) and `sweep.html` (steering curves, trait and coherence heatmaps, the grid as a table).
 */
import { mkdir } from "node:fs/promises";
import path from "node:path";
import type { ScoreStats } from "../pipeline/evaluate.js";
import type { SweepResult } from "../pipeline/sweep.js";
import { writeFileAtomic } from "../store/atomic.js";
import { heatmap } from "./heatmap.js";
import { htmlPage, htmlTable, metaList, plots, section } from "./html.js";
import { lineChart } from "./line-chart.js";
import { formatNumber } from "./scale.js";

export interface SweepReportMeta {
  trait: string;
  /** Model name or path. */
  model: string;
  /** Vectors file and tensor, e.g. `evil.safetensors#response_avg`. */
  vectors: string;
  judge: string;
  questions: number;
  samplesPerQuestion: number;
  temperature: number;
  maxTokens: number;
  seed: number;
  /** Defaults to now. */
  createdAt?: string;
}

export interface ScoreStatsJson {
  mean: number | null;
  std: number | null;
  n: number;
  nulls: number;
}

export function statsJson(s: ScoreStats): ScoreStatsJson {
  return { mean: s.mean, std: s.std, n: s.n, nulls: s.nulls };
}

/** The stable JSON contract of a sweep (snake_case, as the CLI prints it). */
export function sweepJson(result: SweepResult, meta: SweepReportMeta) {
  return {
    trait: meta.trait,
    model: meta.model,
    vectors: meta.vectors,
    judge: meta.judge,
    positions: result.positions,
    prompt_state_ratio: result.promptStateRatio,
    questions: meta.questions,
    samples_per_question: meta.samplesPerQuestion,
    temperature: meta.temperature,
    max_tokens: meta.maxTokens,
    seed: meta.seed,
    coherence_floor: result.coherenceFloor,
    baseline: result.baseline && { trait_score: statsJson(result.baseline.traitScore), coherence: statsJson(result.baseline.coherence) },
    grid: result.grid.map((c) => ({ layer: c.layer, coef: c.coef, trait_score: statsJson(c.traitScore), coherence: statsJson(c.coherence) })),
    layers: result.layers.map((l) => ({ layer: l.layer, change: l.change, coef: l.coef })),
    best_layer: result.bestLayer,
    best_coef: result.bestCoef,
    created_at: meta.createdAt ?? new Date().toISOString(),
  };
}

const fmt = (v: number | null) => (v === null ? "–" : formatNumber(Math.round(v * 10) / 10));
const pm = (s: ScoreStats) => (s.mean === null ? "–" : `${fmt(s.mean)} ± ${fmt(s.std)}`);

export function sweepHtml(result: SweepResult, meta: SweepReportMeta): string {
  const layers = [...new Set(result.grid.map((c) => c.layer))].sort((a, b) => a - b);
  const coefs = [...new Set(result.grid.map((c) => c.coef))].sort((a, b) => a - b);
  const cell = (layer: number, coef: number) => result.grid.find((c) => c.layer === layer && c.coef === coef);
  const floor = result.coherenceFloor;
  const base = result.baseline;

  const series = (pick: (c: NonNullable<ReturnType<typeof cell>>) => ScoreStats) =>
    layers.map((layer) => ({ label: `layer ${layer}`, points: coefs.map((coef) => ({ x: coef, y: pick(cell(layer, coef)!).mean })) }));
  const traitRefs = base?.traitScore.mean != null ? [{ y: base.traitScore.mean, label: "baseline" }] : [];
  const curves = plots(
    lineChart({ series: series((c) => c.traitScore), xLabel: "steering coefficient", yLabel: `${meta.trait} score`, title: `${meta.trait} score vs coefficient`, yDomain: [0, 100], refLines: traitRefs }),
    lineChart({ series: series((c) => c.coherence).map((s) => ({ ...s, dashed: true })), xLabel: "steering coefficient", yLabel: "coherence", title: "coherence vs coefficient", yDomain: [0, 100], refLines: [{ y: floor, label: `floor ${floor}` }] }),
  );
  const grid = (pick: (c: NonNullable<ReturnType<typeof cell>>) => number | null) => layers.map((l) => coefs.map((k) => pick(cell(l, k)!)));
  const lowCoherence = layers.map((l) => coefs.map((k) => {
    const m = cell(l, k)!.coherence.mean;
    return m === null || m < floor;
  }));
  const maps = plots(
    heatmap({
      rowLabels: layers.map(String),
      colLabels: coefs.map(formatNumber),
      values: grid((c) => c.traitScore.mean),
      marked: lowCoherence,
      markLabel: `coherence < ${floor}`,
      domain: [0, 100],
      xLabel: "coefficient",
      yLabel: "layer",
      title: `${meta.trait} score`,
    }),
    heatmap({ rowLabels: layers.map(String), colLabels: coefs.map(formatNumber), values: grid((c) => c.coherence.mean), domain: [0, 100], xLabel: "coefficient", yLabel: "layer", title: "coherence" }),
  );
  const rows = result.grid.map((c) => [
    String(c.layer),
    formatNumber(c.coef),
    pm(c.traitScore),
    c.coherence.mean !== null && c.coherence.mean >= floor ? pm(c.coherence) : { text: pm(c.coherence), className: "low" },
    String(c.traitScore.n),
    String(c.traitScore.nulls + c.coherence.nulls),
  ]);
  const best =
    result.bestLayer === null
      ? `no layer moved the score while keeping coherence ≥ ${floor}`
      : `layer ${result.bestLayer} (coefficient ${formatNumber(result.bestCoef!)}, change ${fmt(result.layers.find((l) => l.layer === result.bestLayer)!.change)})`;
  const summary = metaList([
    ["model", meta.model],
    ["vectors", meta.vectors],
    ["judge", meta.judge],
    ["positions", result.positions],
    ["prompt state", result.promptStateRatio === null ? "not steered" : `${formatNumber(result.promptStateRatio)} × coef × prompt_last at the cell's layer, on the prompt`],
    ["rollouts", `${meta.questions} questions × ${meta.samplesPerQuestion} per cell, temperature ${meta.temperature}, ≤ ${meta.maxTokens} tokens, seed ${meta.seed}`],
    ["baseline", base ? `${meta.trait} ${pm(base.traitScore)}, coherence ${pm(base.coherence)}` : "not evaluated"],
    ["coherence floor", String(floor)],
    ["best layer", best],
  ]);
  const perLayer = htmlTable(
    ["layer", "largest change", "at coefficient"],
    result.layers.map((l) => [String(l.layer), fmt(l.change), l.coef === null ? "–" : formatNumber(l.coef)]),
  );
  return htmlPage({
    title: `Steering sweep: ${meta.trait}`,
    subtitle: `${meta.model} · ${meta.createdAt ?? new Date().toISOString()}`,
    body:
      section("Summary", summary) +
      section("Steering curves", curves) +
      section("Layers × coefficients", maps) +
      section("Best layer", `<p>The layer whose largest move of the score in the coefficient's direction, among cells with mean coherence ≥ ${floor}, is largest.</p>${perLayer}`) +
      section("Grid", htmlTable(["layer", "coef", `${meta.trait} (mean ± std)`, "coherence", "n", "null scores"], rows)),
  });
}

/** Writes `sweep.json` and `sweep.html` into `dir` (atomically) and returns their paths. */
export async function writeSweepReport(dir: string, result: SweepResult, meta: SweepReportMeta): Promise<{ html: string; json: string }> {
  await mkdir(dir, { recursive: true });
  const stamped = { ...meta, createdAt: meta.createdAt ?? new Date().toISOString() };
  const json = path.join(dir, "sweep.json");
  const html = path.join(dir, "sweep.html");
  await writeFileAtomic(json, `${JSON.stringify(sweepJson(result, stamped), null, 2)}\n`);
  await writeFileAtomic(html, sweepHtml(result, stamped));
  return { html, json };
}
