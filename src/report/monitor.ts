/**
 * The monitoring report page, `monitor.html`: projection vs trait score at the reported layer,
 * coloured by prompt level, and Pearson r per layer.
 */
import type { MonitorResult } from "../pipeline/monitor.js";
import { details, htmlPage, htmlTable, metaList, plots, section } from "./html.js";
import { lineChart } from "./line-chart.js";
import { formatNumber } from "./scale.js";
import { scatterPlot } from "./scatter.js";

export interface MonitorReportMeta {
  model: string;
  vectors: string;
  judge: string;
  samples: number;
  createdAt?: string;
}

const fmt = (x: number | null) => (x === null ? "–" : formatNumber(x));

export function monitorHtml(r: MonitorResult, meta: MonitorReportMeta): string {
  const points = r.points.filter((p) => p.traitScore !== null && p.projections[r.layer] !== null);
  const scatter = scatterPlot({
    points: points.map((p) => ({
      x: p.projections[r.layer]!,
      y: p.traitScore!,
      group: p.group ?? undefined,
      label: p.messages.map((m) => m.content).join(" / ").slice(0, 160),
    })),
    xLabel: `last prompt token projection (layer ${r.layer})`,
    yLabel: `${r.trait} score`,
    title: "projection before generation vs trait score of the replies",
  });
  const curve = lineChart({
    series: [{ label: "Pearson r", points: r.perLayer.map((x) => ({ x: x.layer, y: x.pearsonR })) }],
    xLabel: "layer",
    yLabel: "Pearson r",
    title: "how well each layer predicts the trait",
  });
  const examples = [...points]
    .sort((a, b) => b.projections[r.layer]! - a.projections[r.layer]!)
    .filter((_, i, all) => i < 3 || i >= all.length - 3)
    .map((p) =>
      details(
        `projection ${fmt(p.projections[r.layer]!)}, ${r.trait} ${fmt(p.traitScore)}${p.group ? ` (${p.group})` : ""}`,
        `${p.messages.map((m) => `[${m.role}] ${m.content}`).join("\n")}\n\n${p.replies.map((x) => `[reply, ${r.trait} ${fmt(x.trait)}] ${x.text}`).join("\n")}`,
      ),
    );
  const body = [
    metaList([
      ["model", meta.model],
      ["vectors", meta.vectors],
      ["judge", meta.judge],
      ["prompts", String(r.points.length)],
      ["replies per prompt", String(meta.samples)],
      ["reported layer", `${r.layer} (r = ${fmt(r.pearsonR)})`],
      ["created", meta.createdAt ?? new Date().toISOString()],
    ]),
    plots(scatter, curve),
    section("Pearson r per layer", htmlTable(["layer", "r"], r.perLayer.map((x) => [String(x.layer), fmt(x.pearsonR)]))),
    section("Highest and lowest projections", examples.join("")),
  ];
  return htmlPage({ title: `Monitoring ${r.trait}`, subtitle: "Does the last prompt token's projection predict the trait before the model answers?", body: body.join("") });
}
