/**
 * Checks the demo model's steering against issue 17's bounds and prints what explains the result:
 *   npm run demo:steerability [-- --model PATH --vectors DIR --tensor prompt_last --layer L|A-B|L1,L2
 *     --coefs 0,1,2,3,4,5,6,7,8 --positions response --traits evil,sycophantic --questions 10 --samples 4 --threads N --json]
 * Several layers spread each coefficient evenly over them (coef/n of each layer's vector at each).
 * `--prompt-last RATIO@LAYER` also adds coef·RATIO of the file's prompt_last row at LAYER on the prompt.
 * For each trait: +coef·v on the default assistant and −coef·v under the pos prompts (demo judge),
 * the norms of the file's three reductions against the residual norm per layer; then the cosines between the three vectors.
 */
import { parseArgs } from "node:util";
import { steerabilityTables } from "../src/demo/steerability-report.js";
import { DEMO_MODEL_PATH } from "../src/demo/model.js";
import { demoSteerability } from "../src/demo/steerability.js";
import { DEMO_TRAITS, isDemoTrait } from "../src/demo/traits.js";
import { Engine } from "../src/engine/Engine.js";
import type { Positions } from "../src/engine/steering.js";
import { isTensorName } from "../src/vectors/format.js";
import { parseCoefList, parseLayerList } from "../src/cli/args/lists.js";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: DEMO_MODEL_PATH },
    vectors: { type: "string", default: DEMO_MODEL_PATH.replace(/\.gguf$/, ".vectors") },
    tensor: { type: "string" },
    layer: { type: "string" },
    coefs: { type: "string", default: "0,1,2,3,4,5,6,7,8" },
    positions: { type: "string", default: "response" },
    traits: { type: "string", default: DEMO_TRAITS.join(",") },
    "prompt-last": { type: "string" },
    questions: { type: "string", default: "10" },
    samples: { type: "string", default: "4" },
    threads: { type: "string" },
    json: { type: "boolean", default: false },
  },
});
if (values.tensor !== undefined && !isTensorName(values.tensor)) throw new Error(`unknown tensor ${values.tensor}`);
if (!["response", "prompt", "all"].includes(values.positions)) throw new Error(`unknown positions ${values.positions}`);
const traits = values.traits.split(",");
if (!traits.every(isDemoTrait)) throw new Error(`unknown trait in ${values.traits}; the demo traits are ${DEMO_TRAITS.join(", ")}`);
const layers = values.layer === undefined ? undefined : parseLayerList(values.layer);
if (layers === "all") throw new Error("--layer takes layers like 5, 5-6 or 4,6 (not all)");
const pl = values["prompt-last"]?.match(/^([\d.]+)@(\d+)$/);
if (values["prompt-last"] !== undefined && !pl) throw new Error(`--prompt-last takes RATIO@LAYER, e.g. 0.5@5, got ${values["prompt-last"]}`);
const tensor = values.tensor ? `#${values.tensor}` : "";
await using engine = await Engine.create({ gpu: "cpu", threads: values.threads ? Number(values.threads) : undefined });
const model = await engine.loadModel(values.model);
const t0 = performance.now();
const result = await demoSteerability(model, {
  vectors: Object.fromEntries(DEMO_TRAITS.map((t) => [t, `${values.vectors}/${t}.safetensors${tensor}`])) as Record<(typeof DEMO_TRAITS)[number], string>,
  traits,
  ...(pl ? { promptLast: { ratio: Number(pl[1]), layer: Number(pl[2]) } } : {}),
  ...(layers ? { layers } : {}),
  coefs: parseCoefList(values.coefs),
  positions: values.positions as Positions,
  questions: Number(values.questions),
  samples: Number(values.samples),
});
if (values.json) console.log(JSON.stringify(result, null, 2));
else console.log(`${steerabilityTables(result)}\n${((performance.now() - t0) / 1000).toFixed(0)} s`);
