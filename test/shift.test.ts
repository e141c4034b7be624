/**
 * `persona shift` as a user runs it: the shift of each model equals the mean last-prompt-token
 * residual (captured independently) minus the base's, dotted with the unit vector; Pearson r is
 * over the reported points; the run resumes without redoing a model.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import { pearson } from "../src/report/scatter.js";
import { loadTraitFiles } from "../src/traits/format.js";
import { resolveTraitFiles } from "../src/traits/registry.js";
import { layerMatrix, readVectors, updateVectorsMeta, writeVectors } from "../src/vectors/format.js";
import { saveLora } from "../src/engine/train/save.js";
import { writeTinyChatModel } from "./helpers/tiny-chat-model.js";
// Built-in traits, --model demo and --judge demo come from the demo world's registration.
import "../src/demo/register.js";
import { runCli } from "./helpers/cli.js";
import { startFakeLLMServer } from "./helpers/fake-llm-server.js";
import { hashJudgeHandler } from "./helpers/hash-judge.js";

const N_LAYER = 2;
const N_EMBD = 32;
const LAYER = 2;
let dir: string;
let base: string;
let models: string[];
let vectors: string;
const vector = Float32Array.from({ length: N_EMBD }, (_, i) => Math.cos(i * 0.7) * 2);

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-shift-"));
  base = path.join(dir, "base.gguf");
  await writeTinyChatModel(base, { nLayer: N_LAYER, nEmbd: N_EMBD, contextLength: 128, seed: 1 });
  models = [];
  for (const seed of [2, 3, 4]) {
    const f = path.join(dir, `ft-${seed}.gguf`);
    await writeTinyChatModel(f, { nLayer: N_LAYER, nEmbd: N_EMBD, contextLength: 128, seed });
    models.push(f);
  }
  vectors = path.join(dir, "evil.safetensors");
  const data = new Float32Array((N_LAYER + 1) * N_EMBD);
  data.set(vector, LAYER * N_EMBD);
  await writeVectors(vectors, { tensors: { response_avg: layerMatrix(N_LAYER + 1, N_EMBD, data) }, meta: { trait: "evil", source: "extract", bestLayer: LAYER } });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function persona(...args: string[]): Promise<string> {
  const { code, stdout, stderr } = await runCli([...args, "--threads", "1"]);
  assert.equal(code, 0, stderr);
  return stdout;
}

/** Mean last-prompt-token residual at LAYER over the questions, by capture. */
async function meanLast(engine: Engine, file: string, questions: string[], lora?: string): Promise<Float64Array> {
  const m = await engine.loadModel(file, lora ? { loras: [{ path: lora }] } : {});
  const sum = new Float64Array(N_EMBD);
  for (const q of questions) {
    const tokens = await m.encodeChat([{ role: "user", content: q }]);
    const [a] = await m.capture([{ tokens, promptLength: tokens.length }], { captureLayers: [LAYER] });
    const last = a!.promptLast;
    for (let j = 0; j < N_EMBD; j++) sum[j]! += last[j]! / questions.length;
  }
  await m.dispose();
  return sum;
}

describe("persona shift", () => {
  it("reports each model's projection shift and trait score, Pearson r, a report, and resumes", async () => {
    const out = path.join(dir, "run");
    const args = ["shift", "--base", base, "--models", ...models, "--trait", "evil", "--vectors", vectors, "--out", out, "--questions", "2", "--samples", "2", "--max-tokens", "6", "--json"];
    const r = JSON.parse(await persona(...args));
    assert.deepEqual(Object.keys(r).sort(), ["layer", "models", "pearson_r", "trait"]);
    assert.equal(r.trait, "evil");
    assert.equal(r.layer, LAYER);
    assert.deepEqual(r.models.map((m: { model: string }) => m.model), models);
    for (const m of r.models) assert.deepEqual(Object.keys(m).sort(), ["coherence", "model", "shift", "trait_score"]);

    const trait = await loadTraitFiles(await resolveTraitFiles("evil"));
    const questions = trait.eval.questions.slice(0, 2);
    const engine = await Engine.create({ gpu: "cpu", threads: 1 });
    try {
      const b = await meanLast(engine, base, questions);
      const norm = Math.hypot(...vector);
      for (const [i, f] of models.entries()) {
        const a = await meanLast(engine, f, questions);
        const want = a.reduce((s, x, j) => s + (x - b[j]!) * vector[j]!, 0) / norm;
        assert.ok(Math.abs(r.models[i].shift - want) < 1e-4, `${f}: shift ${r.models[i].shift} vs ${want}`);
      }
    } finally {
      await engine.dispose();
    }
    const scored = r.models.filter((m: { trait_score: number | null }) => m.trait_score !== null);
    if (scored.length >= 2) {
      const rho = pearson(scored.map((m: { shift: number }) => m.shift), scored.map((m: { trait_score: number }) => m.trait_score));
      assert.ok(rho === null ? r.pearson_r === null : Math.abs(r.pearson_r - rho) < 1e-12);
    }
    assert.match(await readFile(path.join(out, "report.html"), "utf8"), /<svg/);

    const again = JSON.parse(await persona(...args));
    assert.deepEqual(again, r);
    const lines = (await readFile(path.join(out, "models.jsonl"), "utf8")).trim().split("\n");
    assert.equal(lines.length, models.length, "a resumed run redid finished models");
  });

  it("takes LoRA adapters of the base as the finetuned models", async () => {
    const engine = await Engine.create({ gpu: "cpu", threads: 1 });
    const adapter = path.join(dir, "a.lora.gguf");
    const trait = await loadTraitFiles(await resolveTraitFiles("evil"));
    const questions = trait.eval.questions.slice(0, 2);
    try {
      const m = await engine.loadModel(base);
      const tokens = await m.tokenize("the sea is wide and the sky is blue ".repeat(10));
      const r = await m.train({ tokens, contextLength: 16, epochs: 2, learningRate: 3e-2, lora: { rank: 2 } });
      await m.dispose();
      await saveLora(adapter, "llama", r.lora!);
      const out = JSON.parse(await persona("shift", "--base", base, "--lora", adapter, "--trait", "evil", "--vectors", vectors, "--out", path.join(dir, "run-lora"), "--questions", "2", "--samples", "1", "--max-tokens", "4", "--json"));
      const [b, a] = [await meanLast(engine, base, questions), await meanLast(engine, base, questions, adapter)];
      const want = a.reduce((s, x, j) => s + (x - b[j]!) * vector[j]!, 0) / Math.hypot(...vector);
      assert.equal(out.models[0].model, adapter);
      assert.ok(Math.abs(want) > 1e-3, "the adapter should move the activations");
      assert.ok(Math.abs(out.models[0].shift - want) < 1e-4, `shift ${out.models[0].shift} vs ${want}`);
    } finally {
      await engine.dispose();
    }
  });

  it("projects where persona monitor found the trait most predictable (monitor_layer, its tensor), not at the steering layer", async () => {
    // The monitor records its layer in a user's vectors file; shift then defaults to it.
    const file = path.join(dir, "monitored.safetensors");
    const noise = Float32Array.from({ length: (N_LAYER + 1) * N_EMBD }, (_, i) => Math.sin(i * 1.3));
    const last = new Float32Array((N_LAYER + 1) * N_EMBD);
    last.set(vector, LAYER * N_EMBD);
    last.set(vector.map((x) => -x), (LAYER - 1) * N_EMBD);
    const tensors = { response_avg: layerMatrix(N_LAYER + 1, N_EMBD, noise), prompt_last: layerMatrix(N_LAYER + 1, N_EMBD, last) };
    await writeVectors(file, { tensors, meta: { trait: "evil", source: "extract", bestLayer: 1 } });
    const server = await startFakeLLMServer(hashJudgeHandler());
    const monitorArgs = ["monitor", "--model", base, "--trait", "evil", "--graded", "--questions", "2", "--samples", "1", "--max-tokens", "4", "--judge", `${server.baseURL}#hash-judge`];
    const mon = JSON.parse(await persona(...monitorArgs, "--vectors", `${file}#prompt_last`, "--out", path.join(dir, "mon"), "--json").finally(() => server.close()));
    assert.notEqual(mon.pearson_r, null);
    assert.deepEqual((await readVectors(file)).meta.monitorLayer, { tensor: "prompt_last", layer: mon.layer, pearsonR: mon.pearson_r });

    await updateVectorsMeta(file, { monitorLayer: { tensor: "prompt_last", layer: LAYER, pearsonR: 0.9 } });
    const args = ["shift", "--base", base, "--models", models[0]!, "--trait", "evil", "--vectors", file, "--questions", "2", "--samples", "1", "--max-tokens", "2", "--json"];
    const r = JSON.parse(await persona(...args, "--out", path.join(dir, "run-mon")));
    assert.equal(r.layer, LAYER);
    const ref = JSON.parse(await persona("shift", "--base", base, "--models", models[0]!, "--trait", "evil", "--vectors", vectors, "--questions", "2", "--samples", "1", "--max-tokens", "2", "--out", path.join(dir, "run-ref"), "--json"));
    assert.ok(Math.abs(r.models[0].shift - ref.models[0].shift) < 1e-9, "projected on prompt_last at the monitor layer");
    // --layer still wins; without a monitor layer the best (steering) layer is used.
    assert.equal(JSON.parse(await persona(...args, "--layer", "1", "--out", path.join(dir, "run-l1"))).layer, 1);
    await updateVectorsMeta(file, { monitorLayer: undefined });
    assert.equal(JSON.parse(await persona(...args, "--out", path.join(dir, "run-best"))).layer, 1);
  });
});
