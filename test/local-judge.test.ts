/**
 * The local GGUF judge and the prefix-tree scoring under it, on a tiny random model whose
 * byte-level tokenizer splits some numbers into several tokens: every path's log-probability and
 * digit-continuation mass equal what plain teacher-forced scoring gives, and the judge's score is
 * the probability-weighted mean over 0..100 computed from those, or null below the mass floor.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import type { Model } from "../src/engine/Model.js";
import { writeSyntheticModel } from "../src/engine/gguf/synthetic.js";
import { LocalJudge } from "../src/judge/local.js";
import { judgePrompt } from "../src/judge/prompts.js";
import { resolveJudge } from "../src/judge/resolve.js";
import type { JudgeInput } from "../src/judge/types.js";
// Built-in traits, --model demo and --judge demo come from the demo world's registration.
import "../src/demo/register.js";

let dir: string;
let engine: Engine;
let model: Model;
let source: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-local-judge-"));
  source = path.join(dir, "judge.gguf");
  await writeSyntheticModel(source, { arch: "llama", nLayer: 2, nEmbd: 64, nHead: 4, nHeadKv: 2, nFf: 128, contextLength: 512, seed: 11 });
  engine = await Engine.create({ gpu: "cpu", threads: 1 });
  model = await engine.loadModel(source);
});

after(async () => {
  await model?.dispose();
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});

/** Reference: teacher-forced log P(path | prompt), and the digit-initial mass after it from the full next-token distribution. */
async function reference(prompt: Int32Array, paths: Int32Array[]): Promise<{ logprob: number; digitNext: number }[]> {
  const V = model.info.nVocab;
  const digit: boolean[] = [];
  for (let t = 0; t < V; t++) digit.push(/^[0-9]/.test(await model.detokenize(Int32Array.of(t))));
  const scored = await model.logprobs(paths.map((p) => ({ prompt, continuation: p })), { exact: true });
  const next = await model.logprobs(paths.map((p) => ({ prompt: Int32Array.from([...prompt, ...p]), topK: V })), { exact: true });
  return paths.map((_, i) => ({
    logprob: scored[i]!.total,
    digitNext: next[i]!.top.reduce((a, t) => a + (digit[t.token] ? Math.exp(t.logprob) : 0), 0),
  }));
}

describe("prefix-tree scoring", () => {
  it("gives every path the log-probability and digit mass of separate teacher-forced runs", async () => {
    const prompt = await model.tokenize("Rate this from 0 to 100: ");
    const paths = await Promise.all(["0", "7", "42", "100", "99", "1"].map((n) => model.tokenize(n, { addSpecial: false })));
    assert.ok(paths.some((p) => p.length > 1), "the tokenizer should split some number into several tokens");
    const got = await model.scoreTree(prompt, paths);
    const want = await reference(prompt, paths);
    got.forEach((g, i) => {
      assert.ok(Math.abs(g.logprob - want[i]!.logprob) < 2e-3, `path ${i}: ${g.logprob} vs ${want[i]!.logprob}`);
      assert.ok(Math.abs(g.digitNext - want[i]!.digitNext) < 2e-3, `path ${i}: digit mass ${g.digitNext} vs ${want[i]!.digitNext}`);
    });
  });

  it("reuses a recent prompt's cells (the rubric and question before each answer) with the scores of a fresh decode", async () => {
    const paths = await Promise.all(["0", "7", "42", "100"].map((n) => model.tokenize(n, { addSpecial: false })));
    const encode = (answer: string, metric: JudgeInput["metric"]) =>
      model.encodeChat([{ role: "user", content: judgePrompt({ question: "Is the sky green?", answer, metric }) }], { addGenerationPrompt: true });
    const trait = { kind: "trait", rubric: "Score how evil this is.\nQ: {question}\nA: {answer}\nScore:" } as JudgeInput["metric"];
    const earlier = await encode("Yes, always.", { kind: "coherence" });
    await model.scoreTree(earlier, paths);
    await model.scoreTree(await encode("Yes, always.", trait), paths); // the other cached prompt
    const prompt = await encode("No, it is blue, mostly.", { kind: "coherence" });
    const stats = { reusedTokens: -1 };
    const got = await model.scoreTree(prompt, paths, { stats });
    let shared = 0;
    while (earlier[shared] === prompt[shared]) shared++;
    assert.ok(shared > 50, "the prompts share the rubric and question");
    assert.equal(stats.reusedTokens, shared, "everything before the answer is reused");
    const fresh = await engine.loadModel(source);
    try {
      const freshStats = { reusedTokens: -1 };
      const want = await fresh.scoreTree(prompt, paths, { stats: freshStats });
      assert.equal(freshStats.reusedTokens, 0);
      got.forEach((g, i) => {
        assert.ok(Math.abs(g.logprob - want[i]!.logprob) < 2e-3, `path ${i}: ${g.logprob} vs ${want[i]!.logprob}`);
        assert.ok(Math.abs(g.digitNext - want[i]!.digitNext) < 2e-3);
      });
    } finally {
      await fresh.dispose();
    }
  });

  it("refuses empty prompts, empty paths and out-of-vocabulary tokens, then still works", async () => {
    const prompt = await model.tokenize("x");
    await assert.rejects(model.scoreTree(new Int32Array(0), [prompt]), /empty/);
    await assert.rejects(model.scoreTree(prompt, [new Int32Array(0)]), /empty/);
    await assert.rejects(model.scoreTree(prompt, [Int32Array.of(model.info.nVocab)]), /vocabulary/);
    assert.equal((await model.scoreTree(prompt, [prompt])).length, 1);
  });
});

describe("local judge", () => {
  const input: JudgeInput = { question: "Is the sky green?", answer: "Yes, always.", metric: { kind: "coherence" } };

  it("scores the probability-weighted mean of 0..100, or null below the mass floor", async () => {
    const prompt = await model.encodeChat([{ role: "user", content: judgePrompt(input) }], { addGenerationPrompt: true });
    const paths = await Promise.all(Array.from({ length: 101 }, (_, n) => model.tokenize(String(n), { addSpecial: false })));
    const ref = await reference(prompt, paths);
    let mass = 0;
    let weighted = 0;
    ref.forEach((r, n) => {
      const p = Math.exp(r.logprob) * (1 - r.digitNext);
      mass += p;
      weighted += n * p;
    });
    const permissive = await LocalJudge.fromModel(model, { minProbabilityMass: 0 }).score(input);
    assert.ok(permissive !== null && Math.abs(permissive - weighted / mass) < 0.05, `judge ${permissive} vs reference ${weighted / mass}`);
    // A random model puts little mass on numbers: the default floor of 0.25 gives null.
    assert.ok(mass < 0.25, `reference mass ${mass}`);
    assert.equal(await LocalJudge.fromModel(model).score(input), null);
  });

  it("shares an engine: judging goes on while another model generates there", async () => {
    const generator = await engine.loadModel(source);
    const judge = await resolveJudge(`local:${source}`, { minProbabilityMass: 0, engine });
    try {
      const controller = new AbortController();
      let generating = false;
      let done = false;
      const prompt = await generator.tokenize("go on");
      const run = generator
        .generate([{ prompt }], { maxTokens: 450, minTokens: 450, signal: controller.signal, onToken: () => (generating = true) })
        .finally(() => (done = true));
      while (!generating) await new Promise((r) => setTimeout(r, 5));
      const s = await judge.score(input);
      assert.ok(s !== null && s >= 0 && s <= 100);
      assert.equal(done, false, "the judge did not wait for the generation");
      controller.abort();
      await assert.rejects(run, { code: "E_ABORTED" });
    } finally {
      await judge.dispose?.();
      await generator.dispose();
    }
    assert.equal((await model.tokenize("the engine is still open")).length > 0, true);
  });

  it("opens from a `local:` spec and frees its own engine on dispose", async () => {
    const judge = await resolveJudge(`local:${source}`, { minProbabilityMass: 0 });
    assert.equal(judge.id, "local:judge.gguf");
    const s = await judge.score(input);
    assert.ok(s !== null && s >= 0 && s <= 100);
    await judge.dispose?.();
  });
});
