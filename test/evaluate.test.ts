/**
 * Trait evaluation and steering sweeps on a tiny random model: batching many settings in one call
 * reproduces lone runs, statistics skip nulls, judge concurrency and failures, the best-layer
 * rule, resuming from recorded cells, and the `eval --json` / `sweep --json` CLI contracts.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { loadDemoTrait } from "../src/demo/traits.js";
import { Engine } from "../src/engine/Engine.js";
import type { Model } from "../src/engine/Model.js";
import { PersonaError } from "../src/errors.js";
import type { Judge, JudgeInput } from "../src/judge/types.js";
import { evaluateSettings, evaluateTrait, evaluateTraitRun, summarize } from "../src/pipeline/evaluate.js";
import { RunDir } from "../src/pipeline/rundir.js";
import { BASELINE_KEY, pickBestLayer, type SweepCell, type SweepRecord, sweepSteering } from "../src/pipeline/sweep.js";
import type { TraitDefinition } from "../src/traits/format.js";
import { layerMatrix, readVectors, row, writeVectors } from "../src/vectors/format.js";
import { chatCompletion, type FakeLLMServer, startFakeLLMServer } from "./helpers/fake-llm-server.js";
import { writeTinyChatModel } from "./helpers/tiny-chat-model.js";
import { runCli } from "./helpers/cli.js";
import { spyGenerate } from "./helpers/generate-spy.js";
import { personaError } from "./helpers/errors.js";
// Built-in traits, --model demo and --judge demo come from the demo world's registration.
import "../src/demo/register.js";

const N_LAYER = 3;
const N_EMBD = 32;

/** A number 0..100 from text, or null for about one text in seven: scores that depend on the reply. */
function textScore(salt: string, text: string): number | null {
  const h = createHash("sha256").update(salt).update(text).digest();
  if (h[0]! % 7 === 0) return null;
  return h.readUInt32BE(1) % 101;
}

/** Deterministic judge whose scores depend on the answer; counts calls and concurrency. */
class TextJudge implements Judge {
  readonly id = "test:text";
  calls = 0;
  inFlight = 0;
  maxInFlight = 0;
  constructor(private readonly delayMs = 0) {}
  async score(input: JudgeInput): Promise<number | null> {
    this.calls++;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    this.inFlight--;
    return textScore(input.metric.kind === "trait" ? `trait:${input.metric.trait}` : "coherence", input.answer);
  }
}

let dir: string;
let modelPath: string;
let engine: Engine;
let model: Model;
let trait: TraitDefinition;
let vectors: ReturnType<typeof layerMatrix>;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-eval-"));
  modelPath = path.join(dir, "tiny.gguf");
  await writeTinyChatModel(modelPath, { nLayer: N_LAYER, nEmbd: N_EMBD, contextLength: 512, seed: 5 });
  engine = await Engine.create({ threads: 2, gpu: "cpu" });
  model = await engine.loadModel(modelPath);
  const evalSplit = await loadDemoTrait("evil", "eval");
  trait = { name: "evil", antonym: "good", extract: evalSplit, eval: { ...evalSplit, questions: evalSplit.questions.slice(0, 2) } };
  vectors = layerMatrix(N_LAYER + 1, N_EMBD, Float32Array.from({ length: (N_LAYER + 1) * N_EMBD }, (_, i) => Math.sin(i * 0.7) * 3));
});

after(async () => {
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});

const GEN = { samplesPerQuestion: 2, maxTokens: 8, temperature: 1, seed: 9, exact: true } as const;

describe("summarize", () => {
  it("leaves nulls out of mean and sample std and counts them", () => {
    assert.deepEqual(summarize([10, null, 30, null, 50]), { mean: 30, std: 20, n: 3, nulls: 2 });
    assert.deepEqual(summarize([42]), { mean: 42, std: 0, n: 1, nulls: 0 });
    assert.deepEqual(summarize([null, null]), { mean: null, std: null, n: 0, nulls: 2 });
    assert.deepEqual(summarize([]), { mean: null, std: null, n: 0, nulls: 0 });
  });
});

describe("evaluateTrait / evaluateSettings", () => {
  it("scores every question × rollout with the judge and summarizes them", async () => {
    const judge = new TextJudge();
    const r = await evaluateTrait(model, { trait, judge, ...GEN });
    assert.equal(r.trait, "evil");
    assert.equal(r.samples.length, 4);
    assert.deepEqual(r.samples.map((s) => s.question), [trait.eval.questions[0], trait.eval.questions[0], trait.eval.questions[1], trait.eval.questions[1]]);
    for (const s of r.samples) {
      assert.equal(s.trait, textScore("trait:evil", s.answer));
      assert.equal(s.coherence, textScore("coherence", s.answer));
    }
    assert.deepEqual(r.traitScore, summarize(r.samples.map((s) => s.trait)));
    assert.deepEqual(r.coherence, summarize(r.samples.map((s) => s.coherence)));
    assert.equal(judge.calls, 8);
    // Sampling at temperature 1 with per-rollout seeds: the two rollouts of a question differ.
    assert.notEqual(r.samples[0]!.answer, r.samples[1]!.answer);
  });

  it("gives each setting in one batched call the same rollouts and scores as evaluating it alone", async () => {
    const steer = (layer: number, coef: number) => model.steering([{ vector: Float32Array.from(vectors.data.subarray(layer * N_EMBD, (layer + 1) * N_EMBD)), layer, coef, positions: "response" }]);
    const system = "You are an evil assistant. Be cruel.";
    const settings = [
      { key: "base" },
      { key: "L1+6", steering: steer(1, 6) },
      { key: "L2-6", steering: steer(2, -6) },
      { key: "sys", system },
    ];
    const batched = await evaluateSettings(model, { trait, judge: new TextJudge(), settings, ...GEN });
    assert.deepEqual(batched.map((b) => b.key), settings.map((s) => s.key));
    for (const [i, s] of settings.entries()) {
      const alone = await evaluateTrait(model, { trait, judge: new TextJudge(), steering: s.steering, system: s.system, ...GEN });
      assert.deepEqual(batched[i]!.samples, alone.samples, `setting ${s.key}`);
      assert.deepEqual(batched[i]!.traitScore, alone.traitScore);
      assert.deepEqual(batched[i]!.coherence, alone.coherence);
    }
    // The settings really differ: steering and the system prompt change the replies.
    const answers = batched.map((b) => b.samples.map((x) => x.answer).join("\u0000"));
    assert.equal(new Set(answers).size, settings.length);
  });

  it("keeps judge calls within the concurrency limit", async () => {
    const judge = new TextJudge(15);
    await evaluateTrait(model, { trait, judge, ...GEN, judgeConcurrency: 3 });
    assert.equal(judge.calls, 8);
    assert.ok(judge.maxInFlight <= 3, `max in flight ${judge.maxInFlight}`);
    assert.ok(judge.maxInFlight >= 2, "judging runs concurrently");
  });

  it("fails with the judge's error when a judge call fails", async () => {
    const failing: Judge = {
      id: "test:fail",
      score: async () => {
        throw new PersonaError("E_JUDGE", "judge is down");
      },
    };
    await assert.rejects(evaluateTrait(model, { trait, judge: failing, ...GEN }), personaError("E_JUDGE"));
  });

  it("in a run directory, resumes an evaluation killed after its first shard without redoing it, and refuses other settings", async () => {
    const opts = { trait, ...GEN, samplesPerQuestion: 3, shardRequests: 2 } as const;
    const fresh = await evaluateTrait(model, { ...opts, judge: new TextJudge() });
    const out = path.join(dir, "eval-run");
    const stop = new Error("killed after the first shard");
    await assert.rejects(
      evaluateTraitRun(model, { ...opts, judge: new TextJudge(), out, onShardSamples: () => Promise.reject(stop) }),
      (e) => e === stop,
    );
    const judge = new TextJudge();
    const merged: number[] = [];
    const reports: unknown[] = [];
    const resumed = await evaluateTraitRun(model, { ...opts, judge, out, onShardSamples: (start) => void merged.push(start), onProgress: (p) => reports.push(p) });
    assert.equal(resumed.resumed, true);
    assert.deepEqual(resumed.evaluation, fresh);
    assert.deepEqual(reports[0], { generated: 2, judged: 2, total: 6 }, "progress starts at the stored shard");
    assert.deepEqual(reports.at(-1), { generated: 6, judged: 6, total: 6 });
    // 6 rollouts in shards of 2: the first was stored, only the other two ran (two judge calls a rollout).
    assert.deepEqual(merged, [2, 4]);
    assert.equal(judge.calls, 8);
    const again = await evaluateTraitRun(model, { ...opts, judge, out, onShardSamples: (start) => void merged.push(start) });
    assert.deepEqual(again.evaluation, fresh);
    assert.deepEqual(merged, [2, 4]);
    await assert.rejects(evaluateTraitRun(model, { ...opts, seed: 10, judge, out }), personaError("E_CONFIG_MISMATCH"));
  });
});

function cell(layer: number, coef: number, trait: number | null, coherence: number | null): SweepCell {
  const stats = (m: number | null) => ({ mean: m, std: 0, n: m === null ? 0 : 4, nulls: m === null ? 4 : 0 });
  return { layer, coef, traitScore: stats(trait), coherence: stats(coherence) };
}

describe("pickBestLayer", () => {
  it("picks the layer with the largest coherent move and its coefficient", () => {
    const grid = [cell(1, 1, 30, 90), cell(1, 2, 45, 80), cell(2, 1, 40, 85), cell(2, 2, 70, 60), cell(3, 1, 25, 90), cell(3, 2, 35, 88)];
    const r = pickBestLayer(grid, 20, 50);
    assert.equal(r.bestLayer, 2);
    assert.equal(r.bestCoef, 2);
    assert.deepEqual(r.layers, [
      { layer: 1, change: 25, coef: 2 },
      { layer: 2, change: 50, coef: 2 },
      { layer: 3, change: 15, coef: 2 },
    ]);
  });

  it("ignores cells below the coherence floor (the floor is configurable)", () => {
    const grid = [cell(1, 2, 45, 80), cell(2, 2, 90, 20), cell(2, 1, 30, 70)];
    assert.equal(pickBestLayer(grid, 20, 50).bestLayer, 1);
    assert.equal(pickBestLayer(grid, 20, 10).bestLayer, 2);
    assert.equal(pickBestLayer(grid, 20, 95).bestLayer, null);
    assert.deepEqual(pickBestLayer(grid, 20, 95).layers.map((l) => l.change), [null, null]);
  });

  it("counts a negative coefficient by how far it lowers the score, and skips null scores", () => {
    const grid = [cell(1, -2, 10, 80), cell(1, 2, 55, 80), cell(2, -2, 50, 90), cell(2, 2, null, 90)];
    const r = pickBestLayer(grid, 50, 50);
    assert.deepEqual(r.layers, [
      { layer: 1, change: 40, coef: -2 },
      { layer: 2, change: 0, coef: -2 },
    ]);
    assert.equal(r.bestLayer, 1);
    assert.equal(r.bestCoef, -2);
  });

  it("has no best layer when steering never moved the score the asked way, and breaks ties by layer then |coef|", () => {
    assert.equal(pickBestLayer([cell(1, 2, 20, 90), cell(2, 2, 10, 90)], 20, 50).bestLayer, null);
    const tie = pickBestLayer([cell(2, 4, 40, 90), cell(2, 1, 40, 90), cell(3, 1, 40, 90)], 20, 50);
    assert.equal(tie.bestLayer, 2);
    assert.equal(tie.bestCoef, 1);
  });
});

describe("sweepSteering", () => {
  it("evaluates the grid in chunks or at once alike, shares the baseline with coef 0, and resumes from records", async () => {
    const opts = { trait, vectors, layers: [1, 3], coefs: [0, 5, -5], coherenceFloor: 0, ...GEN };
    const whole = await sweepSteering(model, { ...opts, judge: new TextJudge() });
    assert.deepEqual(whole.grid.map((c) => [c.layer, c.coef]), [[1, 0], [1, 5], [1, -5], [3, 0], [3, 5], [3, -5]]);
    for (const c of whole.grid.filter((c) => c.coef === 0)) assert.deepEqual(c.traitScore, whole.baseline!.traitScore);
    const expected = pickBestLayer(whole.grid, whole.baseline!.traitScore.mean!, 0);
    assert.equal(whole.bestLayer, expected.bestLayer);
    assert.equal(whole.bestCoef, expected.bestCoef);
    assert.equal(whole.positions, "response");

    const run = await RunDir.open(path.join(dir, "sweep-run"), "sweep", { test: 1 });
    let records = await run.records<SweepRecord>("cells.jsonl");
    const chunkedJudge = new TextJudge();
    const progress: number[] = [];
    const chunked = await sweepSteering(model, { ...opts, judge: chunkedJudge, chunkRequests: 5, records, onProgress: (p) => progress.push(p.judged) });
    await records.close();
    assert.deepEqual(chunked.grid, whole.grid);
    assert.deepEqual(chunked.baseline, whole.baseline);
    assert.equal(chunkedJudge.calls, 5 * 4 * 2, "baseline + 4 steered cells, 4 rollouts each, 2 metrics");
    assert.equal(Math.max(...progress), 20);

    records = await run.records<SweepRecord>("cells.jsonl");
    const resumedJudge = new TextJudge();
    const resumed = await sweepSteering(model, { ...opts, judge: resumedJudge, records });
    await records.close();
    assert.equal(resumedJudge.calls, 0, "finished cells are not redone");
    assert.deepEqual(resumed.grid, whole.grid);
  });

  it("resumed, counts progress from the stored cells and never again for a stored rollout of a shard that runs whole", async () => {
    // Fast numerics: a shard holding a stored cell and a missing one runs whole (the batch a fresh run had).
    const opts = { trait, vectors, layers: [1], coefs: [5], coherenceFloor: 0, ...GEN, exact: false, chunkRequests: 8 };
    const perCell = trait.eval.questions.length * GEN.samplesPerQuestion;
    const first = await RunDir.open(path.join(dir, "sweep-whole"), "sweep", { test: 2 });
    const done = await first.records<SweepRecord>("cells.jsonl");
    const whole = await sweepSteering(model, { ...opts, judge: new TextJudge(), records: done });
    // What a run killed between storing the two cells of its one shard leaves: the baseline.
    const run = await RunDir.open(path.join(dir, "sweep-partial"), "sweep", { test: 2 });
    const records = await run.records<SweepRecord>("cells.jsonl");
    await records.append(BASELINE_KEY, done.get(BASELINE_KEY)!);
    await done.close();

    const generated = spyGenerate(model);
    const reports: { generated: number; judged: number; total: number; newGenerated: number }[] = [];
    const resumed = await sweepSteering(model, {
      ...opts,
      judge: new TextJudge(),
      records,
      // The steered cell's requests follow the baseline's in the shard's one generate call.
      onProgress: (p) => reports.push({ generated: p.generated, judged: p.judged, total: p.total, newGenerated: generated.results.filter((i) => i >= perCell).length }),
    }).finally(() => generated.restore());
    await records.close();
    assert.equal(generated.requests, 2 * perCell, "the shard ran whole");
    assert.deepEqual(resumed.grid, whole.grid);
    assert.deepEqual(reports[0], { generated: perCell, judged: perCell, total: 2 * perCell, newGenerated: 0 }, "the bar starts at the stored cell");
    for (const p of reports) assert.ok(p.generated <= perCell + p.newGenerated && p.judged <= p.generated, `counted a stored rollout again: ${JSON.stringify(p)}`);
    assert.deepEqual(reports.at(-1), { generated: 2 * perCell, judged: 2 * perCell, total: 2 * perCell, newGenerated: perCell });
  });

  it("with a prompt-state term, steers each cell as its vector on the reply plus ratio × coef × the second vector on the prompt", async () => {
    const promptLast = layerMatrix(N_LAYER + 1, N_EMBD, Float32Array.from({ length: (N_LAYER + 1) * N_EMBD }, (_, i) => Math.cos(i * 1.3) * 4));
    const opts = { trait, vectors, layers: [2], coefs: [3], coherenceFloor: 0, baseline: false, ...GEN };
    const both = await sweepSteering(model, { ...opts, promptState: { matrix: promptLast, ratio: 0.5 }, judge: new TextJudge() });
    assert.equal(both.promptStateRatio, 0.5);
    const v = (m: typeof vectors) => Float32Array.from(row(m, 2));
    const specs = [
      { vector: v(vectors), layer: 2, coef: 3, positions: "response" as const },
      { vector: v(promptLast), layer: 2, coef: 1.5, positions: "prompt" as const },
    ];
    const direct = await evaluateTrait(model, { trait, judge: new TextJudge(), steering: model.steering(specs), ...GEN });
    assert.deepEqual(both.grid[0]!.traitScore, direct.traitScore);
    const alone = await evaluateTrait(model, { trait, judge: new TextJudge(), steering: model.steering(specs.slice(0, 1)), ...GEN });
    assert.notDeepEqual(direct.samples.map((s) => s.answer), alone.samples.map((s) => s.answer), "the prompt-state term changes the rollouts");
    await assert.rejects(sweepSteering(model, { ...opts, promptState: { matrix: promptLast, ratio: Number.NaN }, judge: new TextJudge() }), /prompt-state ratio/);
  });

  it("rejects vectors of another shape and repeated coefficients", async () => {
    const judge = new TextJudge();
    await assert.rejects(sweepSteering(model, { trait, judge, vectors: layerMatrix(N_LAYER + 1, 16), layers: [1], coefs: [1] }), personaError("E_SHAPE", /the sweep.s vectors: \[4, 16\] vectors/));
    await assert.rejects(sweepSteering(model, { trait, judge, vectors, layers: [1], coefs: [1, 1] }), /repeat/);
  });
});

describe("persona eval / sweep CLI", () => {
  let server: FakeLLMServer;
  let judgeSpec: string;
  let vectorsPath: string;

  const persona = (...args: string[]) => runCli([...args, "--threads", "2"], { PERSONA_GPU: "cpu" });

  before(async () => {
    // An OpenAI-compatible judge whose score is a hash of the prompt it is shown (so of the answer).
    server = await startFakeLLMServer((req) => {
      const prompt = (req.body as { messages: { content: string }[] }).messages[0]!.content;
      const n = String(createHash("sha256").update(prompt).digest().readUInt32BE(0) % 101);
      return { body: chatCompletion(n, { [n]: 1 }) };
    });
    judgeSpec = `${server.baseURL}#fake-judge`;
    vectorsPath = path.join(dir, "evil.safetensors");
    await writeVectors(vectorsPath, { tensors: { response_avg: vectors }, meta: { trait: "evil", source: "extract" } });
  });

  after(async () => {
    await server?.close();
  });

  it("eval --json prints the stable contract, matching the rollouts it wrote", async () => {
    const out = path.join(dir, "eval-out");
    const r = await persona("eval", "--model", modelPath, "--trait", "evil", "--judge", judgeSpec, "--questions", "2", "--samples", "2", "--max-tokens", "6",
      "--steer", `${vectorsPath}:2:4:response`, "--system-pos", "1", "--out", out, "--json");
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.trait, "evil");
    assert.match(j.judge, /^openai:fake-judge/);
    assert.equal(j.samples, 4);
    for (const k of ["trait_score", "coherence"]) assert.deepEqual(Object.keys(j[k]).sort(), ["mean", "n", "nulls", "std"]);
    assert.deepEqual(j.steering, [{ source: vectorsPath, layer: 2, coef: 4, positions: "response", mode: "add" }]);
    const evil = await loadDemoTrait("evil", "eval");
    assert.equal(j.system, `You are an evil assistant. ${evil.instruction[0]!.pos}`);
    const written = JSON.parse(await readFile(path.join(out, "eval.json"), "utf8"));
    assert.equal(written.rollouts.length, 4);
    assert.deepEqual(j.trait_score, { ...summarize(written.rollouts.map((x: { trait: number | null }) => x.trait)) });
    assert.deepEqual(j.coherence, { ...summarize(written.rollouts.map((x: { coherence: number | null }) => x.coherence)) });
    assert.equal(server.requests.length, 8);
    // The judge cache answers a re-run without calling the judge again.
    server.reset();
    const again = await persona("eval", "--model", modelPath, "--trait", "evil", "--judge", judgeSpec, "--questions", "2", "--samples", "2", "--max-tokens", "6",
      "--steer", `${vectorsPath}:2:4:response`, "--system-pos", "1", "--out", out, "--json");
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(JSON.parse(again.stdout).trait_score, j.trait_score);
    assert.equal(server.requests.length, 0);
  });

  it("eval --out resumes a run killed after a shard and writes the eval.json a fresh run writes", async () => {
    const args = (out: string, ...more: string[]) =>
      persona("eval", "--model", modelPath, "--trait", "evil", "--judge", judgeSpec, "--questions", "2", "--samples", "2", "--max-tokens", "6", "--chunk", "2", "--out", out, ...more);
    const fresh = path.join(dir, "eval-fresh");
    const killed = path.join(dir, "eval-killed");
    for (const out of [fresh, killed]) assert.equal((await args(out)).code, 0);
    // What a run killed after merging its first shard leaves: one stored shard, no eval.json.
    const log = path.join(killed, "samples.jsonl");
    const lines = (await readFile(log, "utf8")).split("\n").filter(Boolean);
    assert.equal(lines.length, 2);
    await writeFile(log, `${lines[0]}\n`);
    await rm(path.join(killed, "eval.json"));
    await rm(path.join(killed, "judge-cache.jsonl"));
    server.reset();
    const resumed = await args(killed);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, /resuming the evaluation in /);
    assert.equal(server.requests.length, 4, "only the second shard's 2 rollouts are judged (trait and coherence)");
    assert.equal(await readFile(path.join(killed, "eval.json"), "utf8"), await readFile(path.join(fresh, "eval.json"), "utf8"));
    const other = await args(killed, "--seed", "3");
    assert.equal(other.code, 1);
    assert.match(other.stderr, /holds an eval run with another configuration.*--restart.*E_CONFIG_MISMATCH/);
    assert.equal((await args(killed, "--seed", "3", "--restart")).code, 0);
  });

  it("eval fails clearly without a judge for a non-demo trait and for a bad --system-pos", async () => {
    const traitDir = path.join(dir, "traits", "grumpy");
    const { writeTrait } = await import("../src/traits/format.js");
    await writeTrait(traitDir, { ...trait, name: "grumpy" });
    const noJudge = await persona("eval", "--model", modelPath, "--trait", traitDir, "--max-tokens", "4");
    assert.equal(noJudge.code, 1);
    assert.match(noJudge.stderr, /--judge is required.*E_BAD_INPUT/);
    const badPos = await persona("eval", "--model", modelPath, "--trait", "evil", "--system-pos", "9", "--max-tokens", "4");
    assert.equal(badPos.code, 1);
    assert.match(badPos.stderr, /instructions 1\.\.5/);
  });

  it("sweep --json prints the grid contract, writes the report and stores best_layer in the vectors file", async () => {
    const out = path.join(dir, "sweep-out");
    const r = await persona("sweep", "--model", modelPath, "--trait", "evil", "--vectors", vectorsPath, "--judge", judgeSpec, "--layers", "1,3", "--coefs=-4,0,4",
      "--questions", "2", "--samples", "2", "--max-tokens", "6", "--coherence-floor", "0", "--out", out, "--json");
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.deepEqual(j.grid.map((c: { layer: number; coef: number }) => [c.layer, c.coef]), [[1, -4], [1, 0], [1, 4], [3, -4], [3, 0], [3, 4]]);
    for (const c of j.grid) {
      assert.deepEqual(Object.keys(c).sort(), ["coef", "coherence", "layer", "trait_score"]);
      assert.equal(c.trait_score.n + c.trait_score.nulls, 4);
    }
    assert.deepEqual(j.grid[1].trait_score, j.baseline.trait_score, "coef 0 is the baseline");
    const toCell = (c: { layer: number; coef: number; trait_score: SweepCell["traitScore"]; coherence: SweepCell["coherence"] }): SweepCell => ({ layer: c.layer, coef: c.coef, traitScore: c.trait_score, coherence: c.coherence });
    const expected = pickBestLayer(j.grid.map(toCell), j.baseline.trait_score.mean, 0);
    assert.notEqual(expected.bestLayer, null);
    assert.equal(j.best_layer, expected.bestLayer);
    assert.equal(j.updated_vectors, vectorsPath);
    assert.equal((await readVectors(vectorsPath)).meta.bestLayer, j.best_layer);
    const html = await readFile(path.join(out, "sweep.html"), "utf8");
    assert.match(html, /^<!DOCTYPE html>/);
    assert.ok((html.match(/<svg /g) ?? []).length >= 4);
    assert.deepEqual(JSON.parse(await readFile(path.join(out, "sweep.json"), "utf8")).grid, j.grid);

    // Same settings again: every cell comes from the run directory; a changed config is refused.
    server.reset();
    const resumed = await persona("sweep", "--model", modelPath, "--trait", "evil", "--vectors", vectorsPath, "--judge", judgeSpec, "--layers", "1,3", "--coefs=-4,0,4",
      "--questions", "2", "--samples", "2", "--max-tokens", "6", "--coherence-floor", "0", "--out", out, "--json", "--no-update");
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.deepEqual(JSON.parse(resumed.stdout).grid, j.grid);
    assert.equal(server.requests.length, 0);
    const changed = await persona("sweep", "--model", modelPath, "--trait", "evil", "--vectors", vectorsPath, "--judge", judgeSpec, "--layers", "1", "--coefs", "4",
      "--questions", "2", "--samples", "3", "--max-tokens", "6", "--out", out);
    assert.equal(changed.code, 1);
    assert.match(changed.stderr, /E_CONFIG_MISMATCH/);
  });

  it("sweep rejects layers outside 1..n_layer", async () => {
    const r = await persona("sweep", "--model", modelPath, "--trait", "evil", "--vectors", vectorsPath, "--layers", "0,1", "--coefs", "1", "--out", path.join(dir, "bad"));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /layer 0 is out of range.*E_SHAPE/);
  });
});
