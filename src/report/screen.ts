/**
 * The data-screening report: per trait, the histogram of ΔP (the raw projection when cheap) with
 * the flagged samples highlighted, and the flagged samples with their text. Scores are streamed
 * from `scores.jsonl` and only the flagged samples' texts are held, so it works for datasets of
 * any size.
 */
import { readJsonl } from "../store/jsonl.js";
import type { TrainingSample } from "../pipeline/dataset.js";
import type { ScoreLine, ScreenSummary } from "../pipeline/screen.js";
import { histogram } from "./histogram.js";
import { details, htmlPage, htmlTable, metaList, plots, section } from "./html.js";
import { formatNumber } from "./scale.js";

export interface ScreenReportMeta {
  model: string;
  data: string;
  createdAt?: string;
}

const fmt = (x: number | null) => (x === null ? "–" : formatNumber(x));

function sampleText(s: TrainingSample): string {
  return `${s.prompt.map((m) => `[${m.role}] ${m.content}`).join("\n")}\n[assistant] ${s.response}`;
}

/** `flaggedTexts` are the flagged samples' texts, by sample index. */
export async function screenHtml(summary: ScreenSummary, scoresPath: string, flaggedTexts: ReadonlyMap<number, TrainingSample>, meta: ScreenReportMeta): Promise<string> {
  const names = Object.keys(summary.traits);
  const metric = summary.cheap ? "projection" : "ΔP";
  const values = new Map(names.map((n) => [n, [] as number[]]));
  const baseReplies = new Map<number, string>();
  const flaggedIdx = new Set(names.flatMap((n) => summary.traits[n]!.flagged.map((f) => f.index)));
  for await (const rec of readJsonl(scoresPath, (v) => v as ScoreLine)) {
    if (!rec.scores) continue;
    for (const n of names) {
      const s = rec.scores[n]!;
      const v = summary.cheap ? s.projection : s.delta_p;
      if (v !== null) values.get(n)!.push(v);
    }
    if (flaggedIdx.has(rec.index) && rec.base_reply !== undefined) baseReplies.set(rec.index, rec.base_reply);
  }

  const body = [
    metaList([
      ["model", meta.model],
      ["data", meta.data],
      ["samples scored", String(summary.n)],
      ["broken records skipped", String(summary.skipped)],
      ["score", summary.cheap ? "raw projection of the response average (cheap: no base replies)" : "ΔP = projection of the sample's response − projection of the base model's own reply"],
      ["created", meta.createdAt ?? new Date().toISOString()],
    ]),
    htmlTable(
      ["trait", "layer", "mean ΔP", "mean projection", "mean base projection", "flagged"],
      names.map((n) => {
        const t = summary.traits[n]!;
        return [n, String(t.layer), fmt(t.dataset_mean_delta_p), fmt(t.dataset_mean_projection), fmt(t.dataset_mean_base_projection), String(t.flagged.length)];
      }),
    ),
  ];
  for (const n of names) {
    const t = summary.traits[n]!;
    const flaggedValues = t.flagged.map((f) => (summary.cheap ? f.projection : f.delta_p)).filter((v): v is number => v !== null);
    const plot = histogram({ values: values.get(n)!, flagged: flaggedValues, xLabel: `${metric} on ${n} (layer ${t.layer})`, title: `${n}: ${metric} per sample`, bins: 30 });
    const rows = t.flagged.map((f) => {
      const s = flaggedTexts.get(f.index);
      const base = baseReplies.get(f.index);
      const text = s ? sampleText(s) + (base !== undefined ? `\n\n[base model's reply] ${base}` : "") : "(text unavailable)";
      return details(`#${f.index} (line ${f.line}): ${metric} ${fmt(summary.cheap ? f.projection : f.delta_p)}`, text);
    });
    body.push(section(`${n}`, plots(plot) + (rows.length ? `<p>Flagged samples, highest ${metric} first:</p>${rows.join("")}` : "")));
  }
  if (summary.bad_records.length) {
    body.push(section("Broken records", htmlTable(["line", "index", "error"], summary.bad_records.map((b) => [String(b.line), String(b.index), b.error]))));
  }
  return htmlPage({ title: `Data screening: ${names.join(", ")}`, subtitle: `${summary.n} samples of ${meta.data}`, body: body.join("") });
}
