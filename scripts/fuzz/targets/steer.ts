/**
 * Steering: `--steer SOURCE:LAYER:COEF[:POSITIONS[:MODE]]` strings and the vectors they name, as
 * `persona generate --steer` runs them on the tiny model (parse, load, check against the model,
 * decode with the vector added or ablated). Edits: field counts and separators, numbers of every
 * kind, layers in and out of range, missing or odd sources, extreme or non-finite vector values.
 */
import { parseSteeringRef } from "../../../src/cli/args/steer.js";
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { loadSteering } from "../../../src/vectors/steer.js";
import { interestingNumber, nastyString, numberText } from "../mutate.js";
import type { FuzzCase, RunEnv, Target } from "../target.js";
import { type GgufSpec, TINY_MODEL, tinyModelSpec, writeSpec } from "./gguf.js";
import { sampleVectors, vectorsFileBytes } from "./vectors.js";

interface SteerSeed {
  model: Uint8Array;
}

function spec(rng: Rng): string {
  // Half the specs are well-formed, so that loading and decoding get their share of cases.
  if (rng.chance(0.5)) return `v.safetensors:${rng.pick(["1", ""])}:${rng.pick([0.5, -2, 4, 1e3, 1e30, 3.4e38, 1e-30])}${rng.pick(["", ":response", ":prompt:ablate", ":all:add"])}`;
  const source = rng.pick(["v.safetensors", "v.safetensors#prompt_last", "v.safetensors#nope", "missing.safetensors", "evil", "", "#", "v.safetensors#", "C:\\v.safetensors", nastyString(rng)]);
  const layer = rng.pick(["", "0", "1", "2", "-1", "1.5", " 1", "1e0", "99999999999", numberText(rng)]);
  const coef = rng.chance(0.5) ? String(interestingNumber(rng)) : numberText(rng);
  const tail = rng.pick(["", ":all", ":prompt", ":response", ":response:ablate", ":all:add", ":bogus", ":response:bogus", "::", ":ablate"]);
  const s = `${source}:${layer}:${coef}${tail}`;
  return rng.chance(0.1) ? s.split(":").slice(0, 1 + rng.int(3)).join(":") : s;
}

export const steerTarget: Target<SteerSeed> = {
  name: "steer",
  description: "--steer specs and the vectors they load: fields, numbers, layers, sources, non-finite vectors (generate --steer)",
  async setup() {
    return { model: await writeSpec((await tinyModelSpec()) as GgufSpec) };
  },
  async make(rng, seed): Promise<FuzzCase> {
    const v = sampleVectors(TINY_MODEL.nLayer, TINY_MODEL.nEmbd);
    let note = "";
    if (rng.chance(0.3)) {
      const x = rng.pick([NaN, Infinity, -Infinity, 3.4e38, 1e30, -1e30, 0]);
      const data = v.tensors.response_avg!.data;
      data.fill(x, 0, rng.int(data.length + 1));
      note = `vector values ${x}; `;
    }
    if (rng.chance(0.2)) delete v.meta.bestLayer;
    const specs = Array.from({ length: 1 + rng.int(3) }, () => spec(rng));
    return {
      files: { "model.gguf": seed.model, "v.safetensors": await vectorsFileBytes(v) },
      commands: [["generate", "--model", "model.gguf", "-p", "Hi", "--max-tokens", "3", "-t", "0", ...specs.flatMap((s) => ["--steer", s])]],
      note: `${note}${specs.map((s) => JSON.stringify(s)).join(" ")}`,
      input: specs,
    };
  },
  async run(c, env: RunEnv) {
    const refs = (c.input as string[]).flatMap((s) => parseSteeringRef(s));
    const engine = await env.engine();
    const model = await engine.loadModel("model.gguf");
    try {
      const steering = await loadSteering(refs, model);
      const prompt = await model.encodeChat([{ role: "user", content: "Hi" }]);
      await model.generate([{ prompt }], { maxTokens: 3, temperature: 0, steering });
    } finally {
      await model.dispose();
    }
  },
};
