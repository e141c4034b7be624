/**
 * Prints the demo model's persona evidence: trait and coherence scores (demo judge) on the
 * held-out evaluation questions with no system prompt, under pos prompts and under neg prompts.
 *   npm run demo:evidence [-- --model PATH --samples 10 --questions 20]
 */
import { parseArgs } from "node:util";
import { personaEvidence } from "../src/demo/evidence.js";
import { DEMO_MODEL_PATH } from "../src/demo/model.js";
import { Engine } from "../src/engine/Engine.js";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: DEMO_MODEL_PATH },
    samples: { type: "string", default: "10" },
    questions: { type: "string", default: "20" },
    threads: { type: "string" },
  },
});
await using engine = await Engine.create({ gpu: "cpu", threads: values.threads ? Number(values.threads) : undefined });
const model = await engine.loadModel(values.model);
const t0 = performance.now();
const rows = await personaEvidence(model, { samples: Number(values.samples), questions: Number(values.questions) });
const f = (x: number | null | undefined) => (x === null || x === undefined ? "-" : x.toFixed(1));
console.log("trait          condition  trait score (mean ± std, n)  coherence   other traits");
for (const r of rows) {
  console.log(
    `${r.trait.padEnd(14)} ${r.condition.padEnd(9)}  ${`${f(r.traitScore.mean)} ± ${f(r.traitScore.std)} (${r.traitScore.n})`.padEnd(27)}  ${f(r.coherence.mean).padStart(9)}   ${Object.entries(r.others)
      .map(([k, v]) => `${k} ${f(v)}`)
      .join(", ")}`,
  );
}
console.log(`\n${((performance.now() - t0) / 1000).toFixed(0)} s`);
