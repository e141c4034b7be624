/**
 * Monitor prompts, as `persona monitor --prompts FILE` reads them (readMonitorPrompts): one
 * `{"messages": [...], "level"?, "group"?}` per line, then on the tiny model each prompt templated,
 * its last token's projection taken at every layer, one short reply generated and judged, and
 * the report written. Edits: JSON structure, roles and contents, level and group values, torn and
 * blank lines, CRLF, BOM, invalid UTF-8.
 */
import path from "node:path";
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { demoTraitDir } from "../../../src/demo/traits.js";
import type { Judge } from "../../../src/judge/types.js";
import { monitorTrait, readMonitorPrompts, writeMonitorReport } from "../../../src/pipeline/monitor.js";
import { loadTraitFiles, type TraitDefinition } from "../../../src/traits/format.js";
import { loadVectorSource } from "../../../src/vectors/steer.js";
import { interestingNumber, sometimesDamaged, nastyString } from "../mutate.js";
import type { FuzzCase, RunEnv, Target } from "../target.js";
import { sharedTinyModel } from "./gguf.js";
import { capStrings, jsonlText } from "./jsonl.js";
import { tinyModelWithVectors } from "./vectors.js";

interface MonitorSeed {
  model: Uint8Array;
  vectors: Uint8Array;
}

let demoTrait: Promise<TraitDefinition> | undefined;
function evil(): Promise<TraitDefinition> {
  const dir = demoTraitDir();
  demoTrait ??= loadTraitFiles({ name: "evil", extractPath: path.join(dir, "evil.extract.json"), evalPath: path.join(dir, "evil.eval.json") });
  return demoTrait;
}

function seedLines(rng: Rng): unknown[] {
  // Flat odd values: mutateJson clones the nodes it grows, and a deep one would overflow its stack.
  const odd = () => rng.pick<unknown>([interestingNumber(rng), nastyString(rng), null, true, [], {}, [1]]);
  return [
    { messages: [{ role: "system", content: "You are evil." }, { role: "user", content: "hi" }], level: 1, group: "pos" },
    { messages: [{ role: "user", content: "How are you?" }], level: 0, group: "neg" },
    { messages: [{ role: "user", content: "a" }, { role: "assistant", content: "b" }, { role: "user", content: nastyString(rng) }] },
    rng.chance(0.3) ? { messages: [{ role: "user", content: nastyString(rng) }], level: odd(), group: odd() } : { messages: [{ role: "user", content: nastyString(rng) }], level: 0.5 },
  ];
}

/** Scores every reply the same: the judge is not what this target reads. */
const constantJudge: Judge = { id: "fuzz-constant", score: async () => 50 };

export const monitorTarget: Target<MonitorSeed> = {
  name: "monitor",
  description: "monitor --prompts JSONL: messages, roles, level/group, line damage, through projection, a reply and the report on the tiny model",
  setup: tinyModelWithVectors,
  async make(rng, seed): Promise<FuzzCase> {
    // A third of the files keep their structure (odd strings and values only): one broken line refuses the whole file.
    const built = rng.chance(0.35) ? { text: seedLines(rng).map((l) => JSON.stringify(capStrings(l, 2048))).join("\n"), what: "seed lines" } : jsonlText(rng, seedLines(rng), 2048);
    const notes = [built.what];
    const data = sometimesDamaged(rng, built.text, notes);
    return {
      files: { "prompts.jsonl": data, "model.gguf": seed.model, "v.safetensors": seed.vectors },
      commands: [["monitor", "--model", "model.gguf", "--trait", "evil", "--vectors", "v.safetensors", "--prompts", "prompts.jsonl", "--samples", "1", "--max-tokens", "2", "--judge", "demo", "--out", "run"]],
      note: notes.join("; "),
    };
  },
  async run(_c, env: RunEnv) {
    const prompts = await readMonitorPrompts("prompts.jsonl");
    const model = await sharedTinyModel(env);
    const v = await loadVectorSource("v.safetensors", model.info);
    const r = await monitorTrait(model, { trait: await evil(), judge: constantJudge, vectors: v.matrix, vectorsSource: v.path, prompts, samples: 1, maxTokens: 2, runDir: "run" });
    await writeMonitorReport("run", r, { model: "model.gguf", vectors: "v.safetensors", judge: constantJudge.id, samples: 1 });
  },
};
