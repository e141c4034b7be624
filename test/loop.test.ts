/**
 * The long-lived decode loop (continuous batching) on real llama.cpp runs over a tiny random model:
 * requests that join and leave together equal the same requests alone, cancelling one leaves the
 * others alone, prefix reuse gives the logits of a fresh run, the context is sized once, per-token
 * projections stream with their tokens, and oversize requests are refused.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import type { Model } from "../src/engine/Model.js";
import type { DecodeLoop, LoopRequest, StreamEvent } from "../src/engine/DecodeLoop.js";
import { writeSyntheticModel } from "../src/engine/gguf/synthetic.js";
import { randomVector as vector } from "./helpers/random-vector.js";

let dir: string;
let engine: Engine;
let model: Model;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-loop-"));
  // One thread: the decode is tiny, and a busy box stalls a second thread at every barrier.
  engine = await Engine.create({ gpu: "cpu", threads: 1 });
  const file = path.join(dir, "tiny.gguf");
  await writeSyntheticModel(file, { arch: "llama", nLayer: 4, nEmbd: 64, nHead: 4, nHeadKv: 2, nFf: 160, contextLength: 512, seed: 7, init: { std: 0.15 } });
  model = await engine.loadModel(file);
});

after(async () => {
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});

const prompts = (texts: string[]) => Promise.all(texts.map((t) => model.encodeChat([{ role: "user", content: t }])));
const tokensOf = async (loop: DecodeLoop, r: LoopRequest) => Array.from((await loop.submit(r).result).tokens);

describe("decode loop", () => {
  it("serves concurrent requests with different steering exactly as it serves each alone", async () => {
    const n = model.info.nEmbd;
    const [a, b, c, d] = await prompts(["hello", "what is the time", "tell me about the sea and the sky", "ok"]);
    const steerA = model.steering([{ layer: 2, vector: vector(n, 3), coef: 4 }]);
    const steerB = model.steering([{ layer: 3, vector: vector(n, 9), coef: 1, mode: "ablate", positions: "response" }]);
    const requests: LoopRequest[] = [
      { prompt: a!, steering: steerA },
      { prompt: b! },
      { prompt: c!, steering: steerB },
      { prompt: d!, steering: steerA, temperature: 1, seed: 5 },
      { prompt: a! },
    ].map((r) => ({ temperature: 0, maxTokens: 12, ...r }));
    await using loop = await model.openLoop({ slots: 3, ctxPerSlot: 64, exact: true });
    const together = await Promise.all(requests.map((r) => tokensOf(loop, r)));
    for (const [i, r] of requests.entries()) {
      await using alone = await model.openLoop({ slots: 1, ctxPerSlot: 64, exact: true });
      assert.deepEqual(together[i], await tokensOf(alone, r), `request ${i}`);
    }
    assert.notDeepEqual(together[0], together[4], "the steering took effect");
    // A prompt given as text is tokenized by the worker as it takes the request: the same reply.
    const fromText = loop.submit({ ...requests[1]!, prompt: await model.chatPrompt([{ role: "user", content: "what is the time" }]) });
    assert.equal(await fromText.accepted, b!.length);
    assert.deepEqual(Array.from((await fromText.result).tokens), together[1]);
    // The batch API agrees with the loop.
    const [batch] = await model.generate([{ prompt: c!, steering: steerB }], { temperature: 0, maxTokens: 12, exact: true });
    assert.deepEqual(Array.from(batch!.tokens), together[2]);
  });

  it("cancels one request mid-generation without changing the others", async () => {
    const [a, b] = await prompts(["go on forever", "count to ten"]);
    const opts = { temperature: 0, maxTokens: 24, minTokens: 24 };
    // Long enough that the cancel always lands mid-generation, however fast the box.
    const long = { temperature: 1, seed: 1, maxTokens: 2000, minTokens: 2000 };
    await using loop = await model.openLoop({ slots: 3, ctxPerSlot: 2048, exact: true });
    const refA = await tokensOf(loop, { prompt: a!, ...opts });
    const refB = await tokensOf(loop, { prompt: b!, ...opts });
    const controller = new AbortController();
    const doomed = loop.submit({ prompt: b!, ...long }, { signal: controller.signal });
    const x = loop.submit({ prompt: a!, ...opts });
    const y = loop.submit({ prompt: b!, ...opts });
    let seen = 0;
    await assert.rejects(async () => {
      for await (const e of doomed) if (e.type === "token" && ++seen === 5) controller.abort();
    }, { code: "E_ABORTED" });
    await assert.rejects(doomed.result, { code: "E_ABORTED" });
    assert.deepEqual(Array.from((await x.result).tokens), refA);
    assert.deepEqual(Array.from((await y.result).tokens), refB);
    const stats = await loop.stats();
    assert.equal(stats.active, 0);
    assert.equal(stats.queued, 0);
    // Leaving a `for await` early cancels too.
    const early = loop.submit({ prompt: a!, ...long });
    for await (const e of early) if (e.type === "token") break;
    await assert.rejects(early.result, { code: "E_ABORTED" });
  });

  it("reuses a shared KV prefix only under the same steering, with the logits of a fresh run", async () => {
    const n = model.info.nEmbd;
    const steer = model.steering([{ layer: 2, vector: vector(n, 4), coef: 3 }]);
    const turn1 = [{ role: "user", content: "tell me a story" }];
    const p1 = await model.encodeChat(turn1);
    const opts = { temperature: 0, maxTokens: 8, logprobs: 3, steering: steer };
    await using loop = await model.openLoop({ slots: 1, ctxPerSlot: 128, exact: true });
    const first = await loop.submit({ prompt: p1, ...opts }).result;
    const reply = await model.detokenize(first.tokens);
    const p2 = await model.encodeChat([...turn1, { role: "assistant", content: reply }, { role: "user", content: "and then?" }]);
    const again = await loop.submit({ prompt: p2, ...opts }).result;
    assert.ok(again.reusedTokens > 0, "the second turn reuses the first turn's cells");
    await using fresh = await model.openLoop({ slots: 1, ctxPerSlot: 128, exact: true });
    const ref = await fresh.submit({ prompt: p2, ...opts }).result;
    assert.equal(ref.reusedTokens, 0);
    assert.deepEqual(Array.from(again.tokens), Array.from(ref.tokens));
    for (let t = 0; t < ref.tokenLogprobs!.length; t++) {
      assert.ok(Math.abs(again.tokenLogprobs![t]! - ref.tokenLogprobs![t]!) < 1e-4, `token ${t}: ${again.tokenLogprobs![t]} vs ${ref.tokenLogprobs![t]}`);
    }
    // Other steering produced other cells: nothing is reused.
    const unsteered = await loop.submit({ prompt: p2, temperature: 0, maxTokens: 4 }).result;
    assert.equal(unsteered.reusedTokens, 0);
    // The same prompt again: everything but the last prompt token.
    const same = await loop.submit({ prompt: p2, temperature: 0, maxTokens: 4 }).result;
    assert.equal(same.reusedTokens, p2.length - 1);
    assert.deepEqual(Array.from(same.tokens), Array.from(unsteered.tokens));
    // Conditional steering: a monitored look at the prompt, then response-only steering reuses it.
    const probes = model.probes([{ layer: 3, vector: vector(n, 12) }]);
    const onResponse = model.steering([{ layer: 2, vector: vector(n, 4), coef: 3, positions: "response" }]);
    const look = await loop.submit({ prompt: p2, maxTokens: 0, probes }).result;
    assert.equal(look.tokens.length, 0);
    const steered = await loop.submit({ prompt: p2, ...opts, steering: onResponse, probes }).result;
    assert.equal(steered.reusedTokens, p2.length - 1);
    const steeredFresh = await fresh.submit({ prompt: p2, ...opts, steering: onResponse, probes }).result;
    assert.equal(steeredFresh.reusedTokens, 0, "the fresh loop's cells were steered on the prompt too");
    assert.deepEqual(Array.from(steered.tokens), Array.from(steeredFresh.tokens));
    for (let t = 0; t < steered.tokens.length; t++) assert.ok(Math.abs(steered.tokenLogprobs![t]! - steeredFresh.tokenLogprobs![t]!) < 1e-4);
    assert.ok(Math.abs(steered.projections!.promptLast[0]! - steeredFresh.projections!.promptLast[0]!) < 1e-4);
    assert.ok(Math.abs(steered.projections!.promptLast[0]! - look.projections!.promptLast[0]!) > 1e-3, "steering reached the last prompt token");
  });

  it("streams the prompt's projection, then each token with its own, matching teacher-forced projection", async () => {
    const n = model.info.nEmbd;
    const [prompt] = await prompts(["Say something."]);
    const probes = model.probes([{ layer: 3, vector: vector(n, 5) }, { layer: 1, vector: vector(n, 6) }], { perToken: true });
    await using loop = await model.openLoop({ slots: 2, ctxPerSlot: 64, exact: true });
    const stream = loop.submit({ prompt: prompt!, temperature: 0, maxTokens: 10, probes });
    const events: StreamEvent[] = [];
    for await (const e of stream) events.push(e);
    const r = await stream.result;
    assert.equal(events[0]!.type, "prompt");
    const tokenEvents = events.slice(1).filter((e) => e.type === "token");
    assert.equal(tokenEvents.length, events.length - 1, "one prompt event, then only tokens");
    assert.deepEqual(tokenEvents.map((e) => e.index), tokenEvents.map((_, i) => i));
    assert.deepEqual(tokenEvents.map((e) => e.token), Array.from(r.tokens));
    assert.equal(tokenEvents.map((e) => e.text).join(""), r.text);
    // Every generated token went through the model, so each has its projection.
    const p = r.projections!;
    assert.equal(p.nResponseTokens, r.tokens.length);
    tokenEvents.forEach((e, t) => assert.deepEqual(Array.from(e.projections!), Array.from(p.perToken!.subarray(t * 2, t * 2 + 2))));
    // The same sequence teacher-forced through the batch API projects the same.
    const [forced] = await model.project([{ tokens: new Int32Array([...prompt!, ...r.tokens]), promptLength: prompt!.length }], probes);
    const promptEvent = events[0] as Extract<StreamEvent, { type: "prompt" }>;
    for (let k = 0; k < 2; k++) {
      assert.ok(Math.abs(promptEvent.projections![k]! - forced!.promptLast[k]!) < 1e-4);
      for (let t = 0; t < r.tokens.length; t++) assert.ok(Math.abs(p.perToken![t * 2 + k]! - forced!.perToken![t * 2 + k]!) < 1e-4, `token ${t} probe ${k}`);
    }
  });

  it("sizes its context once: a mixed load never rebuilds it, and an oversize request is refused", async () => {
    const n = model.info.nEmbd;
    const [a, b, c] = await prompts(["hi", "a somewhat longer question about many things at once", "why?"]);
    const ctxPerSlot = b!.length + 8;
    await using loop = await model.openLoop({ slots: 2, ctxPerSlot });
    const before = await loop.stats();
    const probes = model.probes([{ layer: 2, vector: vector(n, 8) }], { perToken: true });
    const steering = model.steering([{ layer: 1, vector: vector(n, 2), coef: 2 }]);
    const controller = new AbortController();
    const load = [
      loop.submit({ prompt: a!, maxTokens: ctxPerSlot - a!.length, minTokens: ctxPerSlot - a!.length }),
      loop.submit({ prompt: b!, maxTokens: 5, probes, steering }),
      loop.submit({ prompt: c!, maxTokens: 8, logprobs: 2, capture: true, captureLayers: [1] }),
      loop.submit({ prompt: b!, maxTokens: 3 }, { signal: controller.signal }),
      loop.submit({ prompt: a!, maxTokens: 8, temperature: 0.7, topK: 20, seed: 2 }),
    ];
    controller.abort();
    const settled = await Promise.allSettled(load.map((s) => s.result));
    assert.deepEqual(settled.map((s) => s.status), ["fulfilled", "fulfilled", "fulfilled", "rejected", "fulfilled"]);
    assert.throws(() => loop.submit({ prompt: b!, maxTokens: 9 }), { code: "E_TOO_LONG", message: /needs \d+ tokens of context/ });
    // A text prompt's length is known, and refused, once the worker has tokenized it.
    const text = loop.submit({ prompt: await model.chatPrompt([{ role: "user", content: "a somewhat longer question about many things at once" }]), maxTokens: 9 });
    await assert.rejects(text.accepted, { code: "E_TOO_LONG", message: new RegExp(`needs ${b!.length + 9} tokens of context`) });
    await assert.rejects(text.result, { code: "E_TOO_LONG" });
    assert.throws(() => loop.submit({ prompt: new Int32Array([model.info.nVocab]) }), { code: "E_BAD_INPUT" });
    const afterStats = await loop.stats();
    assert.equal(afterStats.contextsCreated, before.contextsCreated, "no context was created under load");
    assert.equal(afterStats.nCtx, before.nCtx);
    assert.ok(afterStats.tokensDecoded > ctxPerSlot);
    await loop.dispose();
    await loop.dispose();
    assert.throws(() => loop.submit({ prompt: a! }), { code: "E_DISPOSED" });
  });

  it("serves other engine calls between its steps and fails in-flight requests when disposed", async () => {
    const [a] = await prompts(["keep talking"]);
    const loop = await model.openLoop({ slots: 1, ctxPerSlot: 2048 });
    const endless = { maxTokens: 2000, minTokens: 2000 };
    const long = loop.submit({ prompt: a!, ...endless });
    const queued = loop.submit({ prompt: a!, maxTokens: 4 });
    let firstToken = false;
    for await (const e of long) {
      if (e.type !== "token") continue;
      firstToken = true;
      break; // cancels it
    }
    assert.ok(firstToken);
    await assert.rejects(long.result, { code: "E_ABORTED" });
    assert.ok((await queued.result).tokens.length > 0);
    const again = loop.submit({ prompt: a!, ...endless });
    const events = again[Symbol.asyncIterator]();
    while ((await events.next()).value?.type !== "token");
    const tokens = await model.tokenize("served while the loop runs");
    assert.ok(tokens.length > 0);
    assert.equal((await loop.stats()).active, 1, "still generating");
    await loop.dispose();
    await assert.rejects(again.result, { code: "E_DISPOSED" });
  });
});
