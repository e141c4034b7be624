/**
 * Prompt prefixes shared between the requests of one call (forked with llama_memory_seq_cp) on
 * real llama.cpp runs over a tiny random model: forked and unforked calls give the same tokens
 * (greedy and seeded) and the same projections and captures within 1e-5 (screening's tolerance:
 * a fork changes what each decode's batch holds, and llama.cpp's CPU kernels round a row
 * differently in another batch, by ~1e-7 here), the fork happens (the prompt tokens decoded drop
 * by exactly the shared prefixes), other steering shares nothing, and a fork whose donor is
 * cancelled before decoding the prefix decodes it itself.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import type { Model } from "../src/engine/Model.js";
import { writeSyntheticModel } from "../src/engine/gguf/synthetic.js";
import type { RunTotals } from "../src/engine/worker/core.js";
import { randomVector as vector } from "./helpers/random-vector.js";

let dir: string;
let engine: Engine;
let model: Model;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-prefix-"));
  engine = await Engine.create({ gpu: "cpu", threads: 1 });
  const file = path.join(dir, "tiny.gguf");
  await writeSyntheticModel(file, { arch: "llama", nLayer: 4, nEmbd: 64, nHead: 4, nHeadKv: 2, nFf: 160, contextLength: 512, seed: 11, init: { std: 0.15 } });
  model = await engine.loadModel(file);
});

after(async () => {
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});

const prompts = (texts: string[]) => Promise.all(texts.map((t) => model.encodeChat([{ role: "system", content: "You are terse." }, { role: "user", content: t }])));

/** What `fn`'s batch calls decoded, from the model's run totals. */
async function measured<T>(fn: () => Promise<T>): Promise<{ value: T; totals: RunTotals }> {
  const before = await model.runStats();
  const value = await fn();
  const after = await model.runStats();
  const totals = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k as keyof RunTotals]])) as unknown as RunTotals;
  return { value, totals };
}

const list = (a: ArrayLike<number> | undefined) => Array.from(a ?? []);

function assertClose(a: ArrayLike<number> | undefined, b: ArrayLike<number> | undefined, what: string): void {
  assert.equal(a?.length, b?.length, `${what}: length`);
  for (let i = 0; i < (a?.length ?? 0); i++) assert.ok(Math.abs(a![i]! - b![i]!) < 1e-5, `${what}[${i}]: ${a![i]} vs ${b![i]}`);
}

describe("shared prompt prefixes", () => {
  it("forks n samples of each question: the same tokens and projections as decoding every prompt, and each prompt decoded once", async () => {
    const n = model.info.nEmbd;
    const questions = await prompts(["what is the sea?", "name three colours", "why do birds sing at dawn?"]);
    const samples = 4;
    const requests = questions.flatMap((prompt, q) => Array.from({ length: samples }, (_, k) => ({ prompt: prompt!, seed: 100 * q + k })));
    const probes = model.probes([{ layer: 2, vector: vector(n, 3) }, { layer: model.info.nLayer, vector: vector(n, 4) }], { perToken: true });
    for (const temperature of [0, 1]) {
      const opts = { temperature, maxTokens: 12, exact: true, parallel: 16, probes };
      const forked = await measured(() => model.generate(requests, opts));
      const plain = await measured(() => model.generate(requests, { ...opts, sharePrefixes: false }));
      const shared = questions.reduce((a, p) => a + (samples - 1) * (p!.length - 1), 0);
      assert.equal(forked.totals.tokensForked, shared, `temperature ${temperature}: every sample but the first forks its question's prompt`);
      assert.equal(plain.totals.tokensForked, 0);
      assert.equal(plain.totals.promptTokensDecoded - forked.totals.promptTokensDecoded, shared);
      for (const [i, r] of forked.value.entries()) {
        const ref = plain.value[i]!;
        assert.deepEqual(list(r.tokens), list(ref.tokens), `temperature ${temperature}, request ${i}: tokens`);
        for (const k of ["promptLast", "promptAvg", "responseAvg", "perToken"] as const) {
          assertClose(r.projections![k], ref.projections![k], `temperature ${temperature}, request ${i}: ${k}`);
        }
        assert.equal(r.projections!.nPromptTokens, requests[i]!.prompt.length, "a fork's prompt mean covers its whole prompt");
      }
      if (temperature === 1) assert.notDeepEqual(list(forked.value[0]!.tokens), list(forked.value[1]!.tokens), "the samples differ");
    }
    // Without probes a question's first sample also forks the system prompt another question decodes.
    const opts = { temperature: 0, maxTokens: 12, exact: true, parallel: 16 };
    const forked = await measured(() => model.generate(requests, opts));
    const plain = await model.generate(requests, { ...opts, sharePrefixes: false });
    assert.ok(forked.totals.tokensForked > questions.reduce((a, p) => a + (samples - 1) * (p!.length - 1), 0));
    forked.value.forEach((r, i) => assert.deepEqual(list(r.tokens), list(plain[i]!.tokens), `request ${i}`));
  });

  it("captures forked samples as it captures them decoded whole", async () => {
    const [p, q] = await prompts(["tell me about rivers", "and mountains?"]);
    const replies = await Promise.all(["they flow to the sea", "water runs down", "rivers are long", "tall and cold"].map((t) => model.tokenize(t, { addSpecial: false })));
    const samples = [p, p, p, q].map((prompt, i) => ({ tokens: new Int32Array([...prompt!, ...replies[i]!]), promptLength: prompt!.length }));
    const forked = await measured(() => model.capture(samples));
    const plain = await measured(() => model.capture(samples, { sharePrefixes: false }));
    assert.equal(forked.totals.tokensForked, 2 * (p!.length - 1));
    forked.value.forEach((a, i) => {
      for (const k of ["promptAvg", "promptLast", "responseAvg"] as const) assertClose(a[k], plain.value[i]![k], `sample ${i}: ${k}`);
      assert.equal(a.nPromptTokens, samples[i]!.promptLength);
    });
  });

  it("screens a sample and its base reply from one decode of the prompt", async () => {
    const n = model.info.nEmbd;
    const [p, q] = await prompts(["is it safe?", "what should I do now"]);
    const reply = await model.tokenize("yes it is", { addSpecial: false });
    const samples = [p, q].map((prompt, i) => ({ tokens: new Int32Array([...prompt!, ...reply]), promptLength: prompt!.length, seed: 7 + i }));
    const probes = model.probes([{ layer: 3, vector: vector(n, 9) }]);
    const opts = { temperature: 1, maxTokens: 10, exact: true };
    const both = await measured(() => model.projectAndReply(samples, probes, opts));
    assert.equal(both.totals.tokensForked, p!.length - 1 + q!.length - 1, "each reply forks its sample's prompt");
    const apart = await measured(() => model.projectAndReply(samples, probes, { ...opts, sharePrefixes: false }));
    assert.equal(apart.totals.promptTokensDecoded - both.totals.promptTokensDecoded, both.totals.tokensForked);
    const projected = await model.project(samples, probes);
    const generated = await model.generate(samples.map((s, i) => ({ prompt: [p, q][i]!, seed: s.seed })), { ...opts, probes });
    both.value.forEach((r, i) => {
      for (const x of [apart.value[i]!, { projections: projected[i]!, reply: generated[i]! }]) {
        assert.deepEqual(list(r.reply.tokens), list(x.reply.tokens), `sample ${i}: reply`);
        for (const k of ["promptLast", "promptAvg", "responseAvg"] as const) {
          assertClose(r.projections[k], x.projections[k], `sample ${i}: ${k}`);
          assertClose(r.reply.projections![k], x.reply.projections![k], `sample ${i}: reply ${k}`);
        }
      }
    });
  });

  it("shares nothing steered differently, and the plain prompt under response-only steering", async () => {
    const n = model.info.nEmbd;
    const [p] = await prompts(["one more question"]);
    const everywhere = model.steering([{ layer: 2, vector: vector(n, 5), coef: 3 }]);
    const onResponse = model.steering([{ layer: 2, vector: vector(n, 5), coef: 3, positions: "response" }]);
    const opts = { temperature: 0, maxTokens: 6, exact: true, parallel: 4 };
    const other = await measured(() => model.generate([{ prompt: p! }, { prompt: p!, steering: everywhere }], opts));
    assert.equal(other.totals.tokensForked, 0);
    // The same ablation keeping other means steers the prompt's cells differently.
    const ablation = (mean: number) => model.steering([{ layer: 2, vector: vector(n, 5), coef: 1, mode: "ablate", mean, positions: "all" }]);
    const means = await measured(() => model.generate([{ prompt: p!, steering: ablation(0.5) }, { prompt: p!, steering: ablation(-0.5) }], opts));
    assert.equal(means.totals.tokensForked, 0);
    const response = await measured(() => model.generate([{ prompt: p! }, { prompt: p!, steering: onResponse }], opts));
    assert.equal(response.totals.tokensForked, p!.length - 1);
    const alone = await model.generate([{ prompt: p!, steering: onResponse }], opts);
    assert.deepEqual(list(response.value[1]!.tokens), list(alone[0]!.tokens));
    assert.notDeepEqual(list(response.value[0]!.tokens), list(response.value[1]!.tokens), "the steering took effect");
  });

  it("in a decode loop, forks a prompt another request is decoding; a fork whose donor is cancelled first decodes it itself", async (t) => {
    const n = model.info.nEmbd;
    const [p] = await prompts(["a long question that goes on and on about many different things ".repeat(3)]);
    const req = { prompt: p!, temperature: 0, maxTokens: 6, logprobs: 2 };
    await using alone = await model.openLoop({ slots: 1, ctxPerSlot: 256, exact: true });
    const ref = await alone.submit(req).result;
    // The donor's prompt takes many steps of 2 tokens; its fork waits meanwhile.
    await using loop = await model.openLoop({ slots: 2, ctxPerSlot: 256, exact: true, batchTokens: 2 });
    const together = await Promise.all([loop.submit(req).result, loop.submit(req).result]);
    assert.equal(together[1].reusedTokens, p!.length - 1, "the second request forked the first's prompt");
    for (const r of together) {
      assert.deepEqual(list(r.tokens), list(ref.tokens));
      assertClose(r.tokenLogprobs, ref.tokenLogprobs, "logprobs");
    }

    // With probes, the fork takes the donor's prompt rows as they pass, and must forget them when
    // the donor goes before its prompt is through.
    const probes = model.probes([{ layer: 2, vector: vector(n, 6) }]);
    const observed = { ...req, probes };
    // A fresh loop: `alone` would reuse its cached prompt, and the prompt mean would cover one token.
    await using alone2 = await model.openLoop({ slots: 1, ctxPerSlot: 256, exact: true });
    const refObserved = await alone2.submit(observed).result;
    await using fresh = await model.openLoop({ slots: 2, ctxPerSlot: 256, exact: true, batchTokens: 2 });
    const controller = new AbortController();
    const donor = fresh.submit(observed, { signal: controller.signal });
    const fork = fresh.submit(observed);
    // Cancelled part way through its prompt (a stats call is answered between steps).
    while ((await fresh.stats()).steps < 1);
    controller.abort();
    await assert.rejects(donor.result, { code: "E_ABORTED" });
    const r = await fork.result;
    assert.deepEqual(list(r.tokens), list(refObserved.tokens));
    assertClose(r.projections!.promptAvg, refObserved.projections!.promptAvg, "its prompt mean, each row counted once");
    assert.equal(r.projections!.nPromptTokens, p!.length);
    t.diagnostic(`the fork ${r.reusedTokens === 0 ? "decoded its prompt itself after the donor's cancel" : `shared ${r.reusedTokens} cells (the cancel came after the donor's prompt)`}`);
  });

  it("in a decode loop, a monitored request forks a prompt another request has part decoded (as a server's would); its prompt mean covers the tokens it fed", async () => {
    const [p] = await prompts(["another long question that wanders through many topics in turn ".repeat(3)]);
    const req = { prompt: p!, temperature: 0, maxTokens: 6 };
    const observed = { ...req, probes: model.probes([{ layer: 2, vector: vector(model.info.nEmbd, 7) }]) };
    await using alone = await model.openLoop({ slots: 1, ctxPerSlot: 256, exact: true });
    const ref = await alone.submit(observed).result;
    await using loop = await model.openLoop({ slots: 2, ctxPerSlot: 256, exact: true, batchTokens: 2 });
    const donor = loop.submit(req);
    // The donor is part way through its prompt (2 tokens a step): it can no longer pass every row.
    while ((await loop.stats()).steps < 2);
    const r = await loop.submit(observed).result;
    await donor.result;
    assert.equal(r.reusedTokens, p!.length - 1, "it shared the donor's prompt cells");
    assert.equal(r.projections!.nPromptTokens, 1);
    assert.deepEqual(list(r.tokens), list(ref.tokens));
    assertClose(r.projections!.promptLast, ref.projections!.promptLast, "the last prompt token's projection (monitoring's)");
    assertClose(r.projections!.responseAvg, ref.projections!.responseAvg, "the reply's mean projection");
  });
});
