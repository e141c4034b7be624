/**
 * The demo's result for people: two tables (steering; monitoring and screening) with one row per
 * trait that fit 100 columns, each with a one-line legend for the units and the columns' meaning,
 * then the cosines and where the reports are.
 */
import type { DemoResult } from "./run.js";

const fmt = (x: number | null | undefined) => (x === null || x === undefined ? "-" : x.toFixed(1));

export const MONITOR_LEGEND = "r: prompt projection vs judged score | ΔP: mean projection shift of a dataset | AUC on mixed-10";
export const CAFT_LEGEND = "CAFT: II trained with the trait's span ablated at every layer, run plain";
export const FINETUNE_LEGEND = "finetuned on normal/I/II: shift vs trait gained (r) | prevented: trained with +coef·v, run plain";
export const DEMO_LEGEND = "judge scores 0-100 | steered: at layer × coef, no system prompt | suppressed: pos prompt, 0 → −coef";

/** A final training loss against plain finetuning's, as a signed percentage. */
function lossChange(loss: number, plain: number): string {
  return `${loss >= plain ? "+" : ""}${((loss / plain - 1) * 100).toFixed(0)}%`;
}

function columns(rows: readonly (readonly string[])[]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  // The first column is a label (left-aligned), the rest are values (right-aligned).
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd());
}

export function demoSummary(result: DemoResult): string {
  const header = ["trait", "pairs kept", "pos/neg", "plain", "layer", "coef", "steered", "coherence", "suppressed"];
  const rows = result.traits.map((r) => {
    const best = r.sweep.grid.find((c) => c.layer === r.sweep.bestLayer && c.coef === r.sweep.bestCoef);
    const c = r.extraction.counts;
    const s = r.suppression;
    return [
      r.trait,
      `${c.kept}/${c.total}`,
      `${fmt(r.extraction.scores.pos.trait)}/${fmt(r.extraction.scores.neg.trait)}`,
      fmt(r.sweep.baseline?.traitScore.mean),
      r.sweep.bestLayer === null ? "none" : String(r.sweep.bestLayer),
      best ? String(best.coef) : "-",
      best ? fmt(best.traitScore.mean) : "-",
      best ? fmt(best.coherence.mean) : "-",
      s ? `${fmt(s.unsteered.mean)} → ${fmt(s.steered.mean)} (${s.coef})` : "-",
    ];
  });
  const watch = result.traits.map((r) => [
    r.trait,
    r.monitoring.pearsonR === null ? "-" : r.monitoring.pearsonR.toFixed(2),
    String(r.monitoring.layer),
    `${fmt(r.screening.normal)}/${fmt(r.screening.trait)}`,
    r.screening.mixedAuc === null ? "-" : r.screening.mixedAuc.toFixed(2),
  ]);
  const lines = [...columns([header, ...rows]), DEMO_LEGEND];
  if (watch.length > 0) lines.push("", ...columns([["trait", "monitor r", "at layer", "ΔP normal/trait", "mixed-10 AUC"], ...watch]), MONITOR_LEGEND);
  const tuned = result.traits.filter((r) => r.finetuning);
  if (tuned.length > 0) {
    const ft = tuned.map((r) => {
      const f = r.finetuning!;
      const p = f.preventative;
      return [
        r.trait,
        f.pearsonR === null ? "-" : f.pearsonR.toFixed(2),
        String(f.shiftLayer),
        f.datasets.map((d) => fmt(d.traitScore)).join("/"),
        `${fmt(p.plain.traitScore)} → ${fmt(p.steered.traitScore)} (${p.steering.map((x) => `L${x.layer}+${x.coef}`).join(" ")})`,
        `${fmt(p.plain.coherence)} → ${fmt(p.steered.coherence)}`,
        lossChange(p.steered.loss, p.plain.loss),
      ];
    });
    lines.push("", ...columns([["trait", "shift r", "at layer", "score normal/I/II", "II → prevented", "coherence", "loss"], ...ft]), FINETUNE_LEGEND);
    const caft = tuned.map((r) => {
      const f = r.finetuning!;
      const p = f.preventative;
      return [r.trait, `${fmt(p.plain.traitScore)} → ${fmt(f.caft.traitScore)}`, `${fmt(p.plain.coherence)} → ${fmt(f.caft.coherence)}`, lossChange(f.caft.loss, p.plain.loss)];
    });
    lines.push("", ...columns([["trait", "II → CAFT", "coherence", "loss"], ...caft]), CAFT_LEGEND);
  }
  for (const f of result.failed) lines.push(`${f.trait}: no vectors — ${f.reason}`);
  if (result.cosines.length > 0) lines.push("");
  for (const c of result.cosines) lines.push(`cosine(${c.a}, ${c.b}) at layer ${c.layer}: ${c.cosine.toFixed(3)}`);
  // Paths as the user gave --out (absolute stays absolute), not relative to where the shell is.
  if (result.traits.length > 0) lines.push("", "reports:", ...result.traits.flatMap((r) => [r.report, r.monitoring.report]).map((f) => `  ${f}`));
  return lines.join("\n");
}
