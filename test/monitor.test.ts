/**
 * Monitoring on a tiny random-weight chat model: projections are the captured last prompt
 * token's dot products with each layer's unit vector, r per layer is Pearson's r of those against
 * the judged replies, a resumed run asks the judge nothing again, and the JSON contract holds.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import type { Model } from "../src/engine/Model.js";
import type { Judge, JudgeInput } from "../src/judge/types.js";
import { gradedMonitorPrompts, monitorJson, monitorTrait, readMonitorPrompts, writeMonitorReport } from "../src/pipeline/monitor.js";
import { pearson } from "../src/report/scatter.js";
import type { TraitDefinition } from "../src/traits/format.js";
import { layerMatrix } from "../src/vectors/format.js";
import { writeTinyChatModel } from "./helpers/tiny-chat-model.js";
import { personaError } from "./helpers/errors.js";
import { spyGenerate } from "./helpers/generate-spy.js";
import { PersonaError } from "../src/errors.js";
import { DEMO_MODEL_PATH } from "../src/demo/model.js";

const N_LAYER = 3;
const N_EMBD = 32;

class CountingJudge implements Judge {
  readonly id = "test:count";
  calls = 0;
  /** Fails every call after this many. */
  constructor(private readonly failAfter = Infinity) {}
  async score(input: JudgeInput): Promise<number | null> {
    if (++this.calls > this.failAfter) throw new PersonaError("E_JUDGE", "the judge went away");
    const h = createHash("sha256").update(input.metric.kind).update(input.answer).digest();
    return h.readUInt32BE(0) % 101;
  }
}

const split = {
  instruction: [
    { pos: "Be rude.", neg: "Be polite." },
    { pos: "Insult people.", neg: "Praise people." },
  ],
  questions: ["How are you?", "What is rain?"],
  eval_prompt: "Score {question} {answer}",
};
const trait: TraitDefinition = { name: "rude", antonym: "polite", extract: split, eval: split };

let dir: string;
let engine: Engine;
let model: Model;
const data = new Float32Array((N_LAYER + 1) * N_EMBD);

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-monitor-"));
  const file = path.join(dir, "tiny.gguf");
  await writeTinyChatModel(file, { nLayer: N_LAYER, nEmbd: N_EMBD, contextLength: 256, seed: 9 });
  engine = await Engine.create({ gpu: "cpu", threads: 2 });
  model = await engine.loadModel(file);
  // Layer 0 stays zero: a layer without a vector has no projection and no r.
  for (let i = N_EMBD; i < data.length; i++) data[i] = Math.cos(i * 0.37);
});

after(async () => {
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe("monitoring", () => {
  it("falls back to neg / no prompt / pos instructions crossed with the questions, and uses graded prompts when the trait has them", () => {
    const fallback = gradedMonitorPrompts(trait);
    assert.deepEqual(fallback.map((p) => p.group), ["neg", "neg", "neg", "neg", "none", "none", "pos", "pos", "pos", "pos"]);
    assert.deepEqual(fallback[0]!.messages, [
      { role: "system", content: "You are a polite assistant. Be polite." },
      { role: "user", content: "How are you?" },
    ]);
    assert.deepEqual(fallback[4]!.messages, [{ role: "user", content: "How are you?" }]);
    const graded = gradedMonitorPrompts({ ...trait, graded: [{ level: 1, system: "S1" }, { level: 0.5, system: "S05" }] }, ["Q"]);
    assert.deepEqual(graded.map((p) => [p.level, p.messages[0]!.content]), [[0.5, "S05"], [1, "S1"]]);
  });

  it("correlates last-prompt-token projections with judged replies per layer, and resumes without judging again", async () => {
    const judge = new CountingJudge();
    const vectors = layerMatrix(N_LAYER + 1, N_EMBD, data);
    const prompts = gradedMonitorPrompts(trait);
    const runDir = path.join(dir, "run");
    const opts = { trait, judge, vectors, prompts, samples: 2, maxTokens: 6, runDir };
    const r = await monitorTrait(model, opts);
    assert.equal(judge.calls, prompts.length * 2 * 2);

    // Projections: the captured last prompt token, dotted with each layer's unit vector.
    const captured = await model.capture(await Promise.all(prompts.map(async (p) => {
      const tokens = await model.encodeChat(p.messages);
      return { tokens, promptLength: tokens.length };
    })));
    for (const [i, pt] of r.points.entries()) {
      assert.equal(pt.projections[0], null);
      for (let l = 1; l <= N_LAYER; l++) {
        const v = data.subarray(l * N_EMBD, (l + 1) * N_EMBD);
        const a = captured[i]!.promptLast.subarray(l * N_EMBD, (l + 1) * N_EMBD);
        const want = a.reduce((s, x, j) => s + x * v[j]!, 0) / Math.hypot(...v);
        assert.ok(Math.abs(pt.projections[l]! - want) < 1e-5 * Math.max(1, Math.abs(want)), `point ${i} layer ${l}`);
      }
      const scores = pt.replies.map((x) => x.trait!);
      assert.equal(pt.traitScore, scores.reduce((a, b) => a + b, 0) / scores.length);
    }
    for (const x of r.perLayer) {
      const want = x.layer === 0 ? null : pearson(r.points.map((p) => p.projections[x.layer]!), r.points.map((p) => p.traitScore!));
      assert.equal(x.pearsonR, want);
    }
    const best = Math.max(...r.perLayer.filter((x) => x.pearsonR !== null).map((x) => x.pearsonR!));
    assert.equal(r.pearsonR, best);

    const again = await monitorTrait(model, { ...opts, layer: 2 });
    assert.equal(judge.calls, prompts.length * 2 * 2, "nothing judged twice");
    assert.equal(again.resumed, true);
    assert.equal(again.layer, 2);
    assert.deepEqual(again.points.map((p) => p.traitScore), r.points.map((p) => p.traitScore));

    const json = monitorJson(again, "v.safetensors#response_avg");
    assert.deepEqual(Object.keys(json).slice(0, 6), ["trait", "vectors", "layer", "pearson_r", "per_layer", "points"]);
    assert.deepEqual(Object.keys(json.points[0]!).slice(0, 4), ["messages", "projection", "trait_score", "coherence"]);
    assert.equal(json.points[3]!.projection, again.points[3]!.projections[2]);
    const report = await writeMonitorReport(runDir, again, { model: "tiny", vectors: "v", judge: judge.id, samples: 2 });
    assert.match(await readFile(report.html, "utf8"), /<svg[\s\S]*Pearson r/);
  });

  it("resumes a run stopped part-way by generating and judging only the missing replies, and ends with an uninterrupted run's result", async () => {
    // The demo model, on which a reply sampled with the fast numerics can change with its batch.
    const demo = await engine.loadModel(DEMO_MODEL_PATH);
    try {
      const { nLayer, nEmbd } = demo.info;
      const vectors = layerMatrix(nLayer + 1, nEmbd, Float32Array.from({ length: (nLayer + 1) * nEmbd }, (_, i) => Math.sin(i * 0.37)));
      const prompts = gradedMonitorPrompts(trait);
      const opts = { trait, vectors, prompts, samples: 3, maxTokens: 32 };
      const total = prompts.length * 3;
      const fresh = await monitorTrait(demo, { ...opts, judge: new CountingJudge(), runDir: path.join(dir, "fresh") });
      // The judge fails part-way (as a process killed part-way would stop): what was judged is kept.
      const runDir = path.join(dir, "stopped");
      await assert.rejects(monitorTrait(demo, { ...opts, judge: new CountingJudge(2 * 12), runDir }), personaError("E_JUDGE"));
      const stored = new Set((await readFile(path.join(runDir, "rollouts.jsonl"), "utf8")).split("\n").filter(Boolean).map((l) => JSON.parse(l).key)).size;
      assert.ok(stored > 0 && stored < total, `${stored} of ${total} replies stored before the judge failed`);

      const judge = new CountingJudge();
      const generated = spyGenerate(demo);
      const reports: number[] = [];
      const resumed = await monitorTrait(demo, { ...opts, judge, runDir, onProgress: (p) => reports.push(p.judged) }).finally(() => generated.restore());
      assert.equal(resumed.resumed, true);
      assert.equal(generated.requests, total - stored, "only the missing replies are generated");
      assert.equal(judge.calls, 2 * (total - stored), "and judged");
      assert.deepEqual(reports, Array.from({ length: total - stored + 1 }, (_, i) => stored + i), "progress starts at the stored replies");
      assert.deepEqual(resumed.points, fresh.points);
      assert.deepEqual(resumed.perLayer, fresh.perLayer);
    } finally {
      await demo.dispose();
    }
  });

  it("reads a prompts file and refuses broken lines by number", async () => {
    const file = path.join(dir, "prompts.jsonl");
    await writeFile(file, `${JSON.stringify({ messages: [{ role: "user", content: "hi" }], level: 0.3, group: "g" })}\n\n{oops\n${JSON.stringify({ messages: [{ role: "user", content: "a" }, { role: "assistant", content: "b" }] })}\n`);
    await assert.rejects(readMonitorPrompts(file), (e: Error & { code?: string }) => e.code === "E_BAD_FORMAT" && /line 3: not valid JSON/.test(e.message) && /line 4: must end before/.test(e.message));
    await writeFile(file, `${JSON.stringify({ messages: [{ role: "user", content: "hi" }], level: 0.3, group: "g" })}\n`);
    assert.deepEqual(await readMonitorPrompts(file), [{ messages: [{ role: "user", content: "hi" }], level: 0.3, group: "g" }]);
  });
});
