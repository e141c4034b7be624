/**
 * The eval filter (src/engine/ffi/eval-filter.c, `npm run build:hooks`, part of `npm ci`): hooked
 * decodes answer the scheduler's per-node questions in C and call into JS only for the hooked
 * tensors, with results bit for bit those of the JS path; and how the engine chooses it.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine, resolveEvalFilter } from "../src/engine/Engine.js";
import { EVAL_FILTER_LIBRARY } from "../src/engine/ffi/discover.js";
import { loadEvalFilter } from "../src/engine/ffi/llama.js";
import { writeSyntheticModel } from "../src/engine/gguf/synthetic.js";
import { personaError } from "./helpers/errors.js";
import { evalFilterUpToDate } from "../scripts/build-hooks.js";
import { randomVector } from "./helpers/random-vector.js";

let dir: string;
let modelPath: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-hooks-"));
  modelPath = path.join(dir, "tiny.gguf");
  await writeSyntheticModel(modelPath, { arch: "llama", nLayer: 4, nEmbd: 64, nHead: 4, nHeadKv: 2, nFf: 160, contextLength: 512, seed: 3, init: { std: 0.15 } });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Captures, projections and greedy generations that all run through hooks, and the engine's hook counts after them. */
async function hookedWork(engine: Engine) {
  const model = await engine.loadModel(modelPath);
  const n = model.info.nEmbd;
  const v = randomVector(n, 1);
  const add = model.steering([{ vector: v, layer: 2, coef: 3 }]);
  const ablate = model.steering([{ vector: randomVector(n, 2), layer: 3, coef: 1, mode: "ablate" }]);
  const cap = model.steering([{ vector: v, layer: 1, coef: 0.1, mode: "cap" }]);
  const samples = await Promise.all(["a short reply", "a much longer reply about the garden"].map((r, i) => model.encodePair(`question ${i}?`, r)));
  // Different steering per sample: the control vector cannot do it, the hooks do.
  const activations = await model.capture(samples.map((s, i) => ({ ...s, steering: i === 0 ? add : ablate })));
  const probes = model.probes([{ layer: 1, vector: v }, { layer: 4, vector: randomVector(n, 3) }], { perToken: true });
  const projections = await model.project(samples, probes, { steering: cap });
  const prompt = await model.tokenize("Once upon a time");
  const generations = await model.generate([{ prompt, steering: add }, { prompt, steering: ablate }, { prompt }], {
    temperature: 0,
    maxTokens: 10,
    minTokens: 10,
    probes,
  });
  return {
    activations,
    projections,
    tokens: generations.map((g) => Array.from(g.tokens)),
    generationProjections: generations.map((g) => g.projections),
    info: await engine.systemInfo(),
  };
}

describe("eval filter", () => {
  const skip = existsSync(EVAL_FILTER_LIBRARY) ? false : `not built: ${EVAL_FILTER_LIBRARY} (npm run build:hooks)`;
  it("is used by default once built: JS sees only hooked tensors, and every result equals the JS path's bit for bit", { skip }, async () => {
    const [fast, slow] = await Promise.all([Engine.create({ gpu: "cpu", threads: 1 }), Engine.create({ gpu: "cpu", threads: 1, nativeHooks: false })]);
    try {
      const [a, b] = await Promise.all([hookedWork(fast), hookedWork(slow)]);
      assert.equal(a.info.hooks, "native");
      assert.equal(b.info.hooks, "js");
      assert.deepEqual(a.activations, b.activations);
      assert.deepEqual(a.projections, b.projections);
      assert.deepEqual(a.tokens, b.tokens);
      assert.deepEqual(a.generationProjections, b.generationProjections);
      assert.notDeepEqual(a.tokens[0], a.tokens[2], "steering changed the generation");
      assert.ok(a.generationProjections[2]!.perToken!.some((x) => x !== 0));
      // Capture hooks all 5 residual tensors (layers 0..4), the other decodes at most 4: with the
      // filter no decode calls into JS more often; asked in JS, each of ~100 graph nodes is a call.
      const calls = (x: typeof a) => x.info.hookCalls.jsCalls / x.info.hookCalls.decodes;
      assert.equal(a.info.hookCalls.decodes, b.info.hookCalls.decodes);
      assert.ok(a.info.hookCalls.decodes >= 10, `${a.info.hookCalls.decodes} hooked decodes`);
      assert.ok(calls(a) <= 5, `${calls(a)} JS calls per hooked decode with the filter`);
      assert.ok(calls(b) >= 50, `${calls(b)} JS calls per hooked decode without it`);
    } finally {
      await Promise.all([fast.dispose(), slow.dispose()]);
    }
  });

  it("is chosen by option, PERSONA_NATIVE_HOOKS or its presence, and refused clearly when asked for but missing or not a library", async () => {
    const missing = path.join(dir, "missing.so");
    const present = path.join(dir, "present.so");
    await writeFile(present, "not a library");
    const env = process.env.PERSONA_NATIVE_HOOKS;
    try {
      delete process.env.PERSONA_NATIVE_HOOKS;
      assert.equal(resolveEvalFilter(undefined, missing), undefined);
      assert.deepEqual(resolveEvalFilter(undefined, present), { path: present, required: false });
      assert.deepEqual(resolveEvalFilter(true, present), { path: present, required: true });
      assert.equal(resolveEvalFilter(false, present), undefined);
      assert.throws(() => resolveEvalFilter(true, missing), personaError("E_NO_LIBRARY", /not built .*npm run build:hooks/));
      process.env.PERSONA_NATIVE_HOOKS = "0";
      assert.equal(resolveEvalFilter(undefined, present), undefined);
      assert.deepEqual(resolveEvalFilter(true, present), { path: present, required: true }, "the option wins over the environment");
      process.env.PERSONA_NATIVE_HOOKS = "1";
      assert.throws(() => resolveEvalFilter(undefined, missing), personaError("E_NO_LIBRARY"));
      process.env.PERSONA_NATIVE_HOOKS = "yes";
      assert.throws(() => resolveEvalFilter(undefined, present), personaError("E_BAD_INPUT", /PERSONA_NATIVE_HOOKS must be 0 or 1/));
    } finally {
      if (env === undefined) delete process.env.PERSONA_NATIVE_HOOKS;
      else process.env.PERSONA_NATIVE_HOOKS = env;
    }
    assert.throws(() => loadEvalFilter(present), personaError("E_NO_LIBRARY", /does not load .*npm run build:hooks rebuilds it/));
  });

  it("is rebuilt by build:llama only when it is missing or older than its source", async () => {
    const library = path.join(dir, "filter.so");
    assert.equal(evalFilterUpToDate(library), false, "missing");
    await writeFile(library, "");
    assert.equal(evalFilterUpToDate(library), true, "newer than the source");
    await utimes(library, 0, 0);
    assert.equal(evalFilterUpToDate(library), false, "older than the source");
  });
});
