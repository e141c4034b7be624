/**
 * The engine on real llama.cpp runs over tiny random-weight models written by the project's own
 * GGUF writer: capture against a float64 reference forward pass, steering exactness, batching
 * invariance, seeding, validation of bad input, queueing and cancellation.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import { JOBS_PER_MESSAGE, type Model } from "../src/engine/Model.js";
import { writeSyntheticModel, type SyntheticModelConfig } from "../src/engine/gguf/synthetic.js";
import type { SampleActivations } from "../src/engine/capture.js";
import { PersonaError, reviveError, serializeError } from "../src/errors.js";
import { reduce, referenceForward, relErr } from "./helpers/reference-forward.js";
import { personaError } from "./helpers/errors.js";
import { randomVector } from "./helpers/random-vector.js";
import { unit as unitVector } from "../src/vectors/math.js";
import { captureActivationsToFile, countCaptureInputs, readCaptureInputs } from "../src/pipeline/activations.js";
import { encodeSafetensors } from "../src/vectors/safetensors.js";

const TINY: Omit<SyntheticModelConfig, "arch"> = {
  nLayer: 4,
  nEmbd: 64,
  nHead: 4,
  nHeadKv: 2,
  nFf: 160,
  contextLength: 512,
  seed: 7,
  // Large enough weights that attention is far from uniform, so a wrong RoPE or mask shows.
  init: { std: 0.15 },
};

let dir: string;
let engine: Engine;
const models: Record<"llama" | "qwen2", Model> = {} as never;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-engine-"));
  engine = await Engine.create({ gpu: "cpu", threads: 2 });
  for (const arch of ["llama", "qwen2"] as const) {
    const file = path.join(dir, `${arch}.gguf`);
    await writeSyntheticModel(file, { ...TINY, arch });
    models[arch] = await engine.loadModel(file);
  }
});

after(async () => {
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});

function layerRow(a: Float32Array, layer: number, nEmbd: number): Float32Array {
  return a.subarray(layer * nEmbd, (layer + 1) * nEmbd);
}

describe("capture", () => {
  for (const arch of ["llama", "qwen2"] as const) {
    it(`matches a float64 reference forward pass (${arch})`, async () => {
      const model = models[arch];
      const sample = await model.encodeConversation([
        { role: "system", content: "You are a terse assistant." },
        { role: "user", content: "Where is the station?" },
        { role: "assistant", content: "Two streets north, past the bakery." },
      ]);
      const [acts] = await model.capture([sample]);
      const ref = await referenceForward(model.info.path, Array.from(sample.tokens));
      const n = model.info.nEmbd;
      const p = sample.promptLength;
      assert.equal(acts!.promptAvg.length, (model.info.nLayer + 1) * n);
      assert.ok(relErr(acts!.promptAvg, reduce(ref.residuals, n, 0, p)) < 1e-4, "prompt_avg");
      assert.ok(relErr(acts!.promptLast, reduce(ref.residuals, n, p - 1, p)) < 1e-4, "prompt_last");
      assert.ok(relErr(acts!.responseAvg, reduce(ref.residuals, n, p, sample.tokens.length)) < 1e-4, "response_avg");
      assert.equal(acts!.nPromptTokens, p);
      assert.equal(acts!.nResponseTokens, sample.tokens.length - p);
    });
  }

  it("gives each sample the same result alone or batched with others", async () => {
    const model = models.llama;
    const texts = ["short", "a somewhat longer reply about the weather today", "x"];
    const samples = await Promise.all(texts.map((t, i) => model.encodePair(`question ${i}?`, t)));
    const together = await model.capture(samples);
    for (const [i, s] of samples.entries()) {
      const [alone] = await model.capture([s]);
      assert.ok(relErr(together[i]!.responseAvg, alone!.responseAvg) < 1e-5);
      assert.ok(relErr(together[i]!.promptAvg, alone!.promptAvg) < 1e-5);
    }
  });

  it("splits samples longer than one batch across decodes", async () => {
    const model = models.llama;
    const sample = await model.encodePair("tell me a story ".repeat(12), "once upon a time ".repeat(12));
    const [whole] = await model.capture([sample]);
    const [chunked] = await model.capture([sample], { batchTokens: 16 });
    assert.ok(sample.tokens.length > 40);
    assert.ok(relErr(chunked!.responseAvg, whole!.responseAvg) < 1e-5);
    assert.ok(relErr(chunked!.promptLast, whole!.promptLast) < 1e-5);
  });

  it("streams samples without keeping them", async () => {
    const model = models.llama;
    const samples = await Promise.all([1, 2, 3, 4, 5].map((i) => model.encodePair(`q${i}`, `answer ${i}`)));
    const seen: number[] = [];
    const kept = await model.capture(samples, { onSample: (i, a) => seen.push(i + a.nResponseTokens * 0) });
    assert.deepEqual(kept, []);
    assert.deepEqual([...seen].sort(), [0, 1, 2, 3, 4]);
  });

  it("streams an activations file slice by slice, in the format encoding it in memory gives", async () => {
    const model = models.llama;
    const pairs = [1, 2, 3, 4, 5].map((i) => ({ prompt: `question ${i}?`, response: `answer number ${i}` }));
    const input = path.join(dir, "pairs.jsonl");
    await writeFile(input, `${pairs.map((p) => JSON.stringify(p)).join("\n")}\n\n`);
    const count = await countCaptureInputs(input);
    const out = path.join(dir, "acts.safetensors");
    const { shape } = await captureActivationsToFile(model, readCaptureInputs(input), out, { count, sliceSize: 2 });
    const samples = await Promise.all(pairs.map((p) => model.encodePair(p.prompt, p.response)));
    const acts = await model.capture(samples);
    const stack = (pick: (a: SampleActivations) => Float32Array) => {
      const data = new Float32Array(acts.length * pick(acts[0]!).length);
      acts.forEach((a, i) => data.set(pick(a), i * pick(a).length));
      return { shape, data };
    };
    const expected = encodeSafetensors(
      new Map([
        ["response_avg", stack((a) => a.responseAvg)],
        ["prompt_avg", stack((a) => a.promptAvg)],
        ["prompt_last", stack((a) => a.promptLast)],
      ]),
      { model: model.info.name, architecture: model.info.architecture, layers: "0 = embeddings, l = residual after block l-1" },
    );
    const written = new Uint8Array(await readFile(out));
    assert.equal(written.length, expected.length);
    const dataStart = 8 + Number(new DataView(expected.buffer).getBigUint64(0, true));
    assert.deepEqual(written.subarray(0, dataStart), expected.subarray(0, dataStart), "same header");
    // Slices batch differently, which moves the last float bits only.
    const got = new Float32Array(written.slice(dataStart).buffer);
    assert.ok(relErr(got, new Float32Array(expected.slice(dataStart).buffer)) < 1e-5);
    await writeFile(input, '{"prompt": "a", "response": "b"}\n{"prompt": 3}\n');
    await assert.rejects(countCaptureInputs(input), personaError("E_BAD_FORMAT", /pairs\.jsonl:2/));
  });

  it("keeps results in order when the input spans several worker messages", async () => {
    const model = models.llama;
    const n = JOBS_PER_MESSAGE + 5;
    const samples = Array.from({ length: n }, (_, i) => ({ tokens: Int32Array.from([1 + (i % 50), 2 + (i % 7), 3]), promptLength: 2 }));
    const all = await model.capture(samples, { captureLayers: [2] });
    for (const i of [0, JOBS_PER_MESSAGE - 1, JOBS_PER_MESSAGE, n - 1]) {
      const [alone] = await model.capture([samples[i]!], { captureLayers: [2] });
      assert.ok(relErr(all[i]!.responseAvg, alone!.responseAvg) < 1e-5, `sample ${i}`);
    }
  });
});

describe("projection", () => {
  const dot = (a: Float32Array, u: Float64Array) => a.reduce((acc, x, j) => acc + x * u[j]!, 0);
  const unit = (v: Float32Array) => {
    const n = Math.hypot(...v);
    return Float64Array.from(v, (x) => x / n);
  };
  const close = (got: number, want: number, scale: number, what: string) =>
    assert.ok(Math.abs(got - want) <= 1e-5 * Math.max(Math.abs(want), scale), `${what}: ${got} vs ${want}`);

  it("equals the dot products of captured activations with the unit vectors, per layer and per token", async () => {
    const model = models.llama;
    const n = model.info.nEmbd;
    const samples = await Promise.all(
      ["a reply about the weather", "no", "a much longer reply that goes on about trains and stations"].map((t, i) => model.encodePair(`question ${i}?`, t)),
    );
    const layers = [0, 2, model.info.nLayer];
    const vecs = layers.map((_, k) => randomVector(n, 11 + k));
    // Two probes at one layer: several traits share one forward.
    const specs = [...layers.map((layer, k) => ({ layer, vector: vecs[k]! })), { layer: 2, vector: vecs[0]! }];
    const probes = model.probes(specs, { perToken: true });
    const projected = await model.project(samples, probes);
    const captured = await model.capture(samples);
    for (const [i, s] of samples.entries()) {
      const p = projected[i]!;
      const a = captured[i]!;
      assert.equal(p.nPromptTokens, s.promptLength);
      assert.equal(p.nResponseTokens, s.tokens.length - s.promptLength);
      for (const [k, spec] of specs.entries()) {
        const u = unit(spec.vector);
        const scale = Math.hypot(...layerRow(a.responseAvg, spec.layer, n));
        close(p.promptLast[k]!, dot(layerRow(a.promptLast, spec.layer, n), u), scale, `prompt_last ${i}/${k}`);
        close(p.promptAvg[k]!, dot(layerRow(a.promptAvg, spec.layer, n), u), scale, `prompt_avg ${i}/${k}`);
        close(p.responseAvg[k]!, dot(layerRow(a.responseAvg, spec.layer, n), u), scale, `response_avg ${i}/${k}`);
        // Per token: they average to the response mean, and the last one is that token's own residual.
        const perToken = Array.from({ length: p.nResponseTokens }, (_, t) => p.perToken![t * specs.length + k]!);
        const mean = perToken.reduce((x, y) => x + y, 0) / perToken.length;
        close(mean, p.responseAvg[k]!, scale, `mean of per-token ${i}/${k}`);
      }
      const t = p.nResponseTokens - 1;
      // The whole sample as a prompt: its last prompt token is the last response token.
      const [lastTok] = await model.capture([{ tokens: s.tokens, promptLength: s.tokens.length }]);
      for (const [k, spec] of specs.entries()) {
        close(p.perToken![t * specs.length + k]!, dot(layerRow(lastTok!.promptLast, spec.layer, n), unit(spec.vector)), 1, `last token ${i}/${k}`);
      }
    }
  });

  it("projects while generating: the prompt's last token before sampling, then each generated token", async () => {
    const model = models.llama;
    const n = model.info.nEmbd;
    const prompt = await model.encodeChat([{ role: "user", content: "Say something." }]);
    const L = 3;
    const vector = randomVector(n, 5);
    const probes = model.probes([{ layer: L, vector }], { perToken: true });
    const [g] = await model.generate([{ prompt }], { temperature: 0, maxTokens: 8, probes, exact: true });
    const p = g!.projections!;
    const fed = g!.finishReason === "stop" ? g!.tokens.length : g!.tokens.length - 1;
    assert.equal(p.nResponseTokens, fed);
    assert.equal(p.perToken!.length, fed);
    const tokens = new Int32Array([...prompt, ...g!.tokens.subarray(0, fed)]);
    const [a] = await model.capture([{ tokens, promptLength: prompt.length }]);
    const u = unit(vector);
    const scale = Math.hypot(...layerRow(a!.promptLast, L, n));
    close(p.promptLast[0]!, dot(layerRow(a!.promptLast, L, n), u), scale, "prompt_last");
    if (fed > 0) close(p.responseAvg[0]!, dot(layerRow(a!.responseAvg, L, n), u), scale, "response_avg");
  });

  it("captures a few layers without allocating the others", async () => {
    const model = models.llama;
    const s = await model.encodePair("q?", "an answer");
    const [few] = await model.capture([s], { captureLayers: [3, 1] });
    const [all] = await model.capture([s]);
    const n = model.info.nEmbd;
    assert.deepEqual(few!.layers, [1, 3]);
    assert.equal(few!.responseAvg.length, 2 * n);
    assert.deepEqual(few!.responseAvg.subarray(n, 2 * n), layerRow(all!.responseAvg, 3, n));
    assert.equal(few!.nResponseTokens, all!.nResponseTokens);
  });

  it("rejects probes that do not fit", () => {
    const model = models.llama;
    const n = model.info.nEmbd;
    assert.throws(() => model.probes([{ layer: model.info.nLayer + 1, vector: new Float32Array(n).fill(1) }]), { code: "E_SHAPE" });
    assert.throws(() => model.probes([{ layer: 1, vector: new Float32Array(n - 1).fill(1) }]), { code: "E_SHAPE" });
    assert.throws(() => model.probes([{ layer: 1, vector: new Float32Array(n) }]), { code: "E_BAD_INPUT" });
    assert.throws(() => model.probes([]), { code: "E_BAD_INPUT" });
  });
});

describe("steering", () => {
  const L = 2;
  let sample: Awaited<ReturnType<Model["encodePair"]>>;
  let base: SampleActivations;
  before(async () => {
    sample = await models.llama.encodePair("What should I do today?", "Go for a long walk outside.");
    [base] = (await models.llama.capture([sample])) as [SampleActivations];
  });

  it("adds exactly coef·v at the chosen layer on all positions and leaves earlier layers bit-identical", async () => {
    const model = models.llama;
    const n = model.info.nEmbd;
    const v = randomVector(n, 1);
    const coef = 2.5;
    const [s] = await model.capture([sample], { steering: model.steering([{ vector: v, layer: L, coef }]) });
    for (let l = 0; l < L; l++) {
      assert.deepEqual(layerRow(s!.promptAvg, l, n), layerRow(base.promptAvg, l, n), `layer ${l} prompt_avg`);
      assert.deepEqual(layerRow(s!.responseAvg, l, n), layerRow(base.responseAvg, l, n), `layer ${l} response_avg`);
    }
    for (const key of ["promptLast", "promptAvg", "responseAvg"] as const) {
      const got = layerRow(s![key], L, n);
      const want = layerRow(base[key], L, n).map((x, j) => x + coef * v[j]!);
      assert.ok(relErr(got, want) < 1e-5, key);
    }
    assert.ok(relErr(layerRow(s!.responseAvg, L + 1, n), layerRow(base.responseAvg, L + 1, n)) > 1e-3, "later layers change");
  });

  it("touches only prompt rows with positions=prompt and follows the reference with positions=response", async () => {
    const model = models.llama;
    const n = model.info.nEmbd;
    const v = randomVector(n, 2);
    const p = sample.promptLength;
    const [prompt] = await model.capture([sample], { steering: model.steering([{ vector: v, layer: L, coef: 1, positions: "prompt" }]) });
    assert.ok(relErr(layerRow(prompt!.promptAvg, L, n), layerRow(base.promptAvg, L, n).map((x, j) => x + v[j]!)) < 1e-5);
    assert.deepEqual(layerRow(prompt!.responseAvg, L, n).length, n);
    // Response rows at layer L are computed before any prompt edit reaches them? No: attention at
    // block L reads edited prompt rows only from layer L+1 on, so layer L response rows are untouched.
    assert.ok(relErr(layerRow(prompt!.responseAvg, L, n), layerRow(base.responseAvg, L, n)) < 1e-6);

    const [resp] = await model.capture([sample], { steering: model.steering([{ vector: v, layer: L, coef: 1, positions: "response" }]) });
    // Only the last prompt token among prompt rows: prompt mean moves by v/p.
    assert.ok(relErr(layerRow(resp!.promptAvg, L, n), layerRow(base.promptAvg, L, n).map((x, j) => x + v[j]! / p)) < 1e-5);
    assert.ok(relErr(layerRow(resp!.promptLast, L, n), layerRow(base.promptLast, L, n).map((x, j) => x + v[j]!)) < 1e-5);
    assert.ok(relErr(layerRow(resp!.responseAvg, L, n), layerRow(base.responseAvg, L, n).map((x, j) => x + v[j]!)) < 1e-5);
  });

  it("ablates the component along v at the chosen layer", async () => {
    const model = models.llama;
    const n = model.info.nEmbd;
    const v = randomVector(n, 3);
    const [s] = await model.capture([sample], { steering: model.steering([{ vector: v, layer: L, coef: 1, mode: "ablate" }]) });
    const row = layerRow(s!.promptLast, L, n);
    const dot = row.reduce((a, x, j) => a + x * v[j]!, 0);
    const baseDot = layerRow(base.promptLast, L, n).reduce((a, x, j) => a + x * v[j]!, 0);
    assert.ok(Math.abs(baseDot) > 1e-3);
    assert.ok(Math.abs(dot) < 1e-4 * Math.abs(baseDot) + 1e-6);
  });

  it("an ablation that keeps means moves every touched row's projection onto its class's mean, and nothing else", async () => {
    const model = models.llama;
    const n = model.info.nEmbd;
    const v = randomVector(n, 3);
    const unit = unitVector(v);
    const [mean, lastPromptMean] = [0.75, -1.25];
    const p = sample.promptLength;
    const [s] = await model.capture([sample], { steering: model.steering([{ vector: v, layer: L, coef: 1, mode: "ablate", mean, lastPromptMean, positions: "all" }]) });
    // The last prompt token sits at lastPromptMean along v̂, every other row at mean; off v̂ each is unchanged.
    const kept = { promptLast: lastPromptMean, promptAvg: ((p - 1) * mean + lastPromptMean) / p, responseAvg: mean };
    for (const key of ["promptLast", "promptAvg", "responseAvg"] as const) {
      const baseRow = layerRow(base[key], L, n);
      const baseDot = baseRow.reduce((a, x, j) => a + x * unit[j]!, 0);
      assert.ok(relErr(layerRow(s![key], L, n), baseRow.map((x, j) => x - (baseDot - kept[key]) * unit[j]!)) < 1e-5, key);
    }
    assert.throws(() => model.steering([{ vector: v, layer: L, coef: 1, mode: "ablate", mean: "data" }]), personaError("E_BAD_STEER_ARG", /only persona finetune measures/));
    assert.throws(() => model.steering([{ vector: v, layer: L, coef: 1, mean: 2 }]), personaError("E_BAD_STEER_ARG", /ablate only/));
    assert.throws(() => model.steering([{ vector: v, layer: L, coef: 1, mode: "ablate", mean: Infinity }]), personaError("E_BAD_STEER_ARG", /finite/));
  });

  it("caps the projection on v̂ at a threshold only where it crosses it", async () => {
    const model = models.llama;
    const n = model.info.nEmbd;
    const v = randomVector(n, 3);
    const unit = unitVector(v);
    const baseRow = layerRow(base.promptLast, L, n);
    const baseDot = baseRow.reduce((a, x, j) => a + x * unit[j]!, 0);
    assert.ok(Math.abs(baseDot) > 1e-2);
    // The bound on the side the row lies: it crosses the threshold at half its projection.
    const bound = baseDot > 0 ? "max" : "min";
    const tau = baseDot / 2;
    const capped = async (coef: number, b: "max" | "min") =>
      layerRow((await model.capture([sample], { steering: model.steering([{ vector: v, layer: L, coef, mode: "cap", bound: b }]) }))[0]!.promptLast, L, n);
    // Reference: x − (x·v̂ − τ)·v̂, computed here in float64.
    const expected = baseRow.map((x, j) => x - (baseDot - tau) * unit[j]!);
    assert.ok(relErr(await capped(tau, bound), expected) < 1e-5);
    // A threshold the row does not cross leaves it exactly as it was.
    assert.deepEqual(Array.from(await capped(2 * baseDot, bound)), Array.from(baseRow));
    assert.throws(() => model.steering([{ vector: new Float32Array(n), layer: 1, coef: 1, mode: "cap" }]), personaError("E_BAD_STEER_ARG", /zero vector/));
    assert.throws(() => model.steering([{ vector: v, layer: 1, coef: 1, mode: "cap", bound: "up" as never }]), personaError("E_BAD_STEER_ARG", /bound/));
  });

  it("steers through llama.cpp's control vector bit for bit as through the hook", async () => {
    const model = models.llama;
    const n = model.info.nEmbd;
    const spec = { vector: randomVector(n, 5), layer: L, coef: 1.5 };
    // One add at layer ≥ 2 on every row goes through the control vector; an extra add of zeros at
    // layer 1 (which the control vector cannot reach) sends the same steering through the hook.
    const [native] = await model.capture([sample], { steering: model.steering([spec]) });
    const zero = { vector: new Float32Array(n), layer: 1, coef: 1 };
    const [hooked] = await model.capture([sample], { steering: model.steering([zero, spec]) });
    for (const key of ["promptLast", "promptAvg", "responseAvg"] as const) assert.deepEqual(native![key], hooked![key], key);
    assert.notDeepEqual(native!.responseAvg, base.responseAvg);
    const prompt = await model.encodeChat([{ role: "user", content: "Say something." }]);
    const strong = { ...spec, coef: 40 };
    const opts = { temperature: 0, maxTokens: 12 };
    const [a] = await model.generate([{ prompt }], { ...opts, steering: model.steering([strong]) });
    const [b] = await model.generate([{ prompt }], { ...opts, steering: model.steering([zero, strong]) });
    assert.deepEqual(Array.from(a!.tokens), Array.from(b!.tokens));
  });

  it("steers generation and can differ per request in one batch", async () => {
    const model = models.llama;
    const prompt = await model.encodeChat([{ role: "user", content: "Say something." }]);
    const v = randomVector(model.info.nEmbd, 4);
    const strong = model.steering([{ vector: v, layer: 1, coef: 40 }]);
    const opts = { temperature: 0, maxTokens: 12 };
    const [plain] = await model.generate([{ prompt }], opts);
    const [steered] = await model.generate([{ prompt }], { ...opts, steering: strong });
    assert.notDeepEqual(Array.from(steered!.tokens), Array.from(plain!.tokens));
    const mixed = await model.generate([{ prompt }, { prompt, steering: strong }], opts);
    assert.deepEqual(Array.from(mixed[0]!.tokens), Array.from(plain!.tokens));
    assert.deepEqual(Array.from(mixed[1]!.tokens), Array.from(steered!.tokens));
  });
});

describe("generation", () => {
  // Exact numerics (F32 KV, no flash attention): the default F16 cache lets batch composition move
  // logits by ~1e-4, enough to flip near-ties of a random model.
  it("batched greedy generation equals one-at-a-time generation", async () => {
    const model = models.qwen2;
    const prompts = await Promise.all(
      ["hello", "what is the time", "tell me about the sea and the sky", "ok", "why?"].map((t) =>
        model.encodeChat([{ role: "user", content: t }]),
      ),
    );
    const opts = { temperature: 0, maxTokens: 16, exact: true };
    const batched = await model.generate(prompts.map((prompt) => ({ prompt })), { ...opts, parallel: 3 });
    for (const [i, prompt] of prompts.entries()) {
      const [alone] = await model.generate([{ prompt }], opts);
      assert.deepEqual(Array.from(batched[i]!.tokens), Array.from(alone!.tokens), `prompt ${i}`);
      assert.equal(batched[i]!.text, alone!.text);
    }
  });

  it("reproduces sampled output from a seed, whatever the batch", async () => {
    const model = models.llama;
    const prompt = await model.encodeChat([{ role: "user", content: "Write a line." }]);
    const opts = { temperature: 1, topP: 0.95, topK: 40, maxTokens: 20, seed: 11, exact: true };
    const a = await model.generate([{ prompt }, { prompt }, { prompt }], opts);
    const b = await model.generate([{ prompt }, { prompt }, { prompt }], { ...opts, parallel: 1 });
    assert.deepEqual(a.map((r) => Array.from(r.tokens)), b.map((r) => Array.from(r.tokens)));
    assert.notDeepEqual(Array.from(a[0]!.tokens), Array.from(a[1]!.tokens), "requests get distinct streams");
    const c = await model.generate([{ prompt }], { ...opts, seed: 12 });
    assert.notDeepEqual(Array.from(c[0]!.tokens), Array.from(a[0]!.tokens));
  });

  it("respects max and min new tokens and stops on end-of-generation", async () => {
    const model = models.llama;
    const prompt = await model.encodeChat([{ role: "user", content: "hi" }]);
    const rs = await model.generate(
      Array.from({ length: 6 }, () => ({ prompt })),
      { temperature: 1.5, maxTokens: 30, minTokens: 5, seed: 3 },
    );
    for (const r of rs) {
      assert.ok(r.tokens.length >= 5 && r.tokens.length <= 30);
      assert.ok(!Array.from(r.tokens).includes(model.info.eos), "EOG is never part of the output");
      if (r.finishReason === "length") assert.equal(r.tokens.length, 30);
    }
  });

  it("log-probabilities of a continuation agree with the top-k and sum", async () => {
    const model = models.qwen2;
    const prompt = await model.encodeChat([{ role: "user", content: "count" }]);
    const [g] = await model.generate([{ prompt }], { temperature: 0, maxTokens: 5 });
    const [lp] = await model.logprobs([{ prompt, continuation: g!.tokens, topK: 5 }]);
    assert.equal(lp!.continuation.length, g!.tokens.length);
    assert.equal(lp!.top[0]!.token, g!.tokens[0], "greedy picks the most likely token");
    assert.ok(Math.abs(lp!.top[0]!.logprob - lp!.continuation[0]!) < 1e-6);
    assert.ok(Math.abs(lp!.total - lp!.continuation.reduce((a, b) => a + b, 0)) < 1e-9);
    const probs = lp!.top.map((t) => Math.exp(t.logprob));
    assert.ok(probs.every((p, i) => i === 0 || p <= probs[i - 1]!));
  });
});

describe("bad input gives errors, not aborts", () => {
  it("rejects steering that does not fit", () => {
    const model = models.llama;
    const n = model.info.nEmbd;
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return (e as PersonaError).code;
      }
      return "no error";
    };
    assert.equal(code(() => model.steering([{ vector: new Float32Array(n + 1), layer: 1, coef: 1 }])), "E_SHAPE");
    assert.equal(code(() => model.steering([{ vector: new Float32Array(n), layer: 0, coef: 1 }])), "E_SHAPE");
    assert.equal(code(() => model.steering([{ vector: new Float32Array(n), layer: model.info.nLayer + 1, coef: 1 }])), "E_SHAPE");
    assert.equal(code(() => model.steering([{ vector: new Float32Array(n), layer: 1, coef: NaN }])), "E_BAD_STEER_ARG");
    assert.equal(code(() => model.steering([{ vector: new Float32Array(n), layer: 1, coef: 1, mode: "ablate" }])), "E_BAD_STEER_ARG");
  });

  it("rejects out-of-vocabulary tokens and bad sampling settings", async () => {
    const model = models.llama;
    await assert.rejects(model.generate([{ prompt: Int32Array.from([1, model.info.nVocab]) }]), { code: "E_BAD_INPUT" });
    await assert.rejects(model.generate([{ prompt: Int32Array.from([-1]) }]), { code: "E_BAD_INPUT" });
    await assert.rejects(model.generate([{ prompt: new Int32Array(0) }]), { code: "E_BAD_INPUT" });
    await assert.rejects(model.generate([{ prompt: Int32Array.from([1]) }], { topP: 0 }), { code: "E_BAD_INPUT" });
    await assert.rejects(model.capture([{ tokens: Int32Array.from([1, 2]), promptLength: 3 }]), { code: "E_BAD_INPUT" });
    // Still alive.
    const [r] = await model.generate([{ prompt: Int32Array.from([1, 2, 3]) }], { maxTokens: 2, temperature: 0 });
    assert.equal(r!.tokens.length, 2);
  });

  it("refuses missing, truncated and non-model files with clear errors", async () => {
    await assert.rejects(engine.loadModel(path.join(dir, "missing.gguf")), { code: "E_NOT_FOUND" });
    const good = await readFile(models.llama.info.path);
    const truncated = path.join(dir, "truncated.gguf");
    await writeFile(truncated, good.subarray(0, Math.floor(good.length * 0.7)));
    await assert.rejects(engine.loadModel(truncated), { code: "E_BAD_MODEL", message: /truncat/i });
    const garbage = path.join(dir, "garbage.gguf");
    await writeFile(garbage, Buffer.from("definitely not a gguf file, just text"));
    await assert.rejects(engine.loadModel(garbage), { code: "E_BAD_MODEL" });
    const [r] = await models.llama.generate([{ prompt: Int32Array.from([5, 6]) }], { maxTokens: 1, temperature: 0 });
    assert.equal(r!.tokens.length, 1);
  });

  it("keeps a worker error's identity, stack and cause across the thread boundary", async () => {
    // An error from inside the worker (a directory as the model, refused by the GGUF reader before
    // any read could fail with a bare EISDIR): still a PersonaError, and its stack is the worker's.
    await assert.rejects(engine.loadModel(dir), (e: unknown) => {
      const err = e as NodeJS.ErrnoException;
      assert.ok(e instanceof PersonaError);
      assert.equal(err.code, "E_BAD_INPUT");
      assert.match(err.message, /is not a file; expected a GGUF model file/);
      assert.match(err.stack ?? "", /reader\.ts/);
      return true;
    });
    // What the worker posts survives structured cloning with class, code and the cause chain.
    const inner = Object.assign(new Error("disk full"), { code: "ENOSPC", path: "/x" });
    const sent = structuredClone(serializeError(new PersonaError("E_NATIVE", "save failed", { cause: inner })));
    const back = reviveError(sent);
    assert.ok(back instanceof PersonaError);
    assert.equal(back.code, "E_NATIVE");
    const cause = back.cause as NodeJS.ErrnoException;
    assert.equal(cause.message, "disk full");
    assert.equal(cause.code, "ENOSPC");
    assert.equal(cause.path, "/x");
    assert.equal(cause.stack, inner.stack);
  });
});

describe("concurrency", () => {
  it("queues concurrent callers and gives each its own result", async () => {
    const model = models.llama;
    const prompt = await model.encodeChat([{ role: "user", content: "go" }]);
    const opts = { temperature: 0, maxTokens: 8 };
    const [ref] = await model.generate([{ prompt }], opts);
    const all = await Promise.all([
      model.generate([{ prompt }], opts),
      model.capture([await model.encodePair("a", "b")]),
      model.generate([{ prompt }], opts),
      model.tokenize("hello"),
    ]);
    assert.deepEqual(Array.from(all[0][0]!.tokens), Array.from(ref!.tokens));
    assert.deepEqual(Array.from(all[2][0]!.tokens), Array.from(ref!.tokens));
  });

  it("cancels a running generation with an AbortSignal and stays usable", async () => {
    const model = models.llama;
    const prompt = await model.encodeChat([{ role: "user", content: "go on forever" }]);
    const controller = new AbortController();
    let tokens = 0;
    const run = model.generate(
      Array.from({ length: 4 }, () => ({ prompt })),
      {
        maxTokens: 400,
        minTokens: 400,
        onToken: () => {
          if (++tokens === 20) controller.abort();
        },
        signal: controller.signal,
      },
    );
    await assert.rejects(run, { code: "E_ABORTED" });
    const [r] = await model.generate([{ prompt }], { maxTokens: 3, temperature: 0 });
    assert.equal(r!.tokens.length, 3);
  });
});
