import type { SteerabilityResult, SteerCell } from "./steerability.js";

const f = (x: number | null | undefined, d = 0) => (x === null || x === undefined || Number.isNaN(x) ? "-" : x.toFixed(d));
const cells = (cs: readonly SteerCell[]) => cs.map((c) => `${f(c.traitScore.mean)}/${f(c.coherence.mean)}`.padStart(7)).join(" ");

/** Plain-text tables of a steerability run: per trait the two curves (trait/coherence per coefficient), the bounds, the norms; then the cosines. */
export function steerabilityTables(r: SteerabilityResult): string {
  const lines: string[] = [];
  for (const t of r.traits) {
    const b = t.bounds;
    const where = t.layers.length === 1 ? `layer ${t.layers[0]}` : `layers ${t.layers.join(",")}, coef spread evenly`;
    const prompt = t.promptLast ? ` + coef·${t.promptLast.ratio} of prompt_last at layer ${t.promptLast.layer} on the prompt` : "";
    lines.push(`${t.trait} (${t.tensor}, ${where}${prompt}), trait/coherence by coefficient:`);
    lines.push(`  coef                     ${t.plus.map((c) => String(c.coef).padStart(7)).join(" ")}`);
    lines.push(`  +coef, default assistant ${cells(t.plus)}`);
    lines.push(`  −coef, pos prompt        ${cells(t.minus)}`);
    lines.push(
      `  bounds: +coef monotone from ≤ 15: ${b.plusMonotone ? "yes" : "no"}; reaches ≥ 60 at coherence ≥ 60: ${b.plusCoef === null ? "no" : `at ${b.plusCoef}`}; ` +
        `−coef < 20 at coherence ≥ 70: ${b.minusCoef === null ? "no" : `at ${b.minusCoef}`}  → ${b.pass ? "PASS" : "FAIL"}`,
    );
    lines.push(`  ‖residual‖ (last prompt token) by layer: ${t.residualNorm.map((n) => f(n, 1)).join(" ")}`);
    for (const [name, norms] of Object.entries(t.tensorNorms)) lines.push(`  ‖${name}‖ by layer: ${norms.map((n) => f(n, 2)).join(" ")}`);
  }
  lines.push(`cosines between the vectors: ${r.cosines.map((c) => `${c.a}·${c.b} ${f(c.cosine, 2)} (layer ${c.layer})`).join(", ")}`);
  return lines.join("\n");
}
