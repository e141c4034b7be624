/**
 * Trait spans (CAFT's subspace): the top-k directions against an exact eigendecomposition, the
 * `{name}_span` tensor in the vectors file, and, on a tiny random-weight model, a span ablation
 * that equals one single-direction ablation per basis row and leaves no row any component in the
 * span, in inference and inside the training graph.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import type { Model } from "../src/engine/Model.js";
import { writeSyntheticModel } from "../src/engine/gguf/synthetic.js";
import type { CaptureSample } from "../src/engine/types.js";
import { layerMatrix, parseVectorRef, readVectors, writeVectors, type PersonaVectors } from "../src/vectors/format.js";
import { dot } from "../src/vectors/math.js";
import { type SpanMatrix, orthonormalityError, spanRows, symmetricEigen, topDirections } from "../src/vectors/span.js";
import { steeringSpecs } from "../src/vectors/steer.js";
import { MAX_TRAIN_STEERING } from "../src/engine/train/options.js";
import { finetune } from "../src/pipeline/finetune.js";
import { parseSteeringRef } from "../src/cli/args/steer.js";
import { personaError } from "./helpers/errors.js";
import { randomVector } from "./helpers/random-vector.js";

const N_LAYER = 2;
const N_EMBD = 64;
const K = 12;

/** Rows with a strong k-dimensional part plus noise, like pair differences. */
function lowRankRows(count: number, dim: number, rank: number, seed: number): Float32Array[] {
  const basis = Array.from({ length: rank }, (_, j) => randomVector(dim, seed + 101 * j));
  return Array.from({ length: count }, (_, i) => {
    const w = randomVector(rank, seed + 7 * i + 1);
    const noise = randomVector(dim, seed + 13 * i + 5);
    return Float32Array.from({ length: dim }, (_, e) => basis.reduce((s, b, j) => s + (j + 1) * w[j]! * b[e]!, 0) + 0.05 * noise[e]!);
  });
}

/** Σ cos² of the principal angles between two orthonormal bases: k when they span the same subspace. */
const overlap = (a: readonly ArrayLike<number>[], b: readonly ArrayLike<number>[]) => a.reduce((s, u) => s + b.reduce((t, w) => t + dot(u, w) ** 2, 0), 0);

function spanOf(rowsPerLayer: (Float32Array[] | null)[], k: number): SpanMatrix {
  const data = new Float32Array(rowsPerLayer.length * k * N_EMBD);
  rowsPerLayer.forEach((rows, l) => rows && topDirections(rows, k, N_EMBD).forEach((r, j) => data.set(r, (l * k + j) * N_EMBD)));
  return { nLayerPlus1: rowsPerLayer.length, k, nEmbd: N_EMBD, data };
}

describe("top directions", () => {
  it("span the top eigenvectors of the rows' Gram matrix, orthonormal, strongest first", () => {
    const rows = lowRankRows(80, N_EMBD, 6, 11);
    const gram = new Float64Array(N_EMBD * N_EMBD);
    for (const r of rows) for (let a = 0; a < N_EMBD; a++) for (let b = 0; b < N_EMBD; b++) gram[a * N_EMBD + b]! += r[a]! * r[b]!;
    const exact = symmetricEigen(gram, N_EMBD);
    for (const k of [1, 4, 6]) {
      const got = topDirections(rows, k, N_EMBD);
      assert.ok(orthonormalityError(got) < 1e-5);
      assert.ok(k - overlap(got, exact.vectors.slice(0, k)) < 1e-5, `k=${k}: ${overlap(got, exact.vectors.slice(0, k))}`);
      // Strongest first: each row's energy Σ (row·u)² decreases.
      const energy = got.map((u) => rows.reduce((s, r) => s + dot(r, u) ** 2, 0));
      energy.slice(1).forEach((e, j) => assert.ok(e <= energy[j]! * (1 + 1e-6)));
    }
    assert.ok(topDirections(Array.from({ length: 5 }, () => new Float32Array(N_EMBD)), 3, N_EMBD).every((r) => r.every((x) => x === 0)));
    assert.throws(() => topDirections(rows, 0, N_EMBD), personaError("E_BAD_INPUT", /1 ≤ k/));
    assert.throws(() => topDirections(rows.slice(0, 3), 4, N_EMBD), personaError("E_BAD_INPUT", /at least 4/));
  });
});

describe("spans in the vectors file", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "persona-span-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("round-trip as {name}_span [n_layer+1, k, n_embd]; a basis that is not orthonormal is refused", async () => {
    const span = spanOf([null, lowRankRows(30, N_EMBD, 4, 3), lowRankRows(30, N_EMBD, 4, 4)], 3);
    const v: PersonaVectors = { tensors: { prompt_last: layerMatrix(N_LAYER + 1, N_EMBD, randomVector((N_LAYER + 1) * N_EMBD, 1)) }, spans: { prompt_last: span }, meta: { trait: "t", source: "test" } };
    const file = path.join(dir, "t.safetensors");
    await writeVectors(file, v);
    const back = await readVectors(file);
    assert.deepEqual(back.spans?.prompt_last, span);
    const skewed = Float32Array.from(span.data);
    skewed[span.k * N_EMBD]! += 0.01;
    await assert.rejects(writeVectors(file, { ...v, spans: { prompt_last: { ...span, data: skewed } } }), personaError("E_BAD_FORMAT", /layer 1 is not an orthonormal basis/));
    assert.throws(() => parseVectorRef(`${file}#prompt_last_span`), personaError("E_BAD_INPUT", /subspace.*only ablation/));
  });
});

describe("ablating a span on a tiny model", () => {
  let dir: string;
  let engine: Engine;
  let model: Model;
  let spanFile: string;
  let rowFiles: string[];
  let span: SpanMatrix;
  let sample: CaptureSample;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "persona-span-model-"));
    engine = await Engine.create({ gpu: "cpu", threads: 1 });
    const gguf = path.join(dir, "tiny.gguf");
    await writeSyntheticModel(gguf, { arch: "llama", nLayer: N_LAYER, nEmbd: N_EMBD, nHead: 4, nHeadKv: 2, nFf: 128, contextLength: 256, seed: 5, init: { std: 0.15 } });
    model = await engine.loadModel(gguf, { noMmap: true });
    span = spanOf([null, lowRankRows(40, N_EMBD, K, 21), lowRankRows(40, N_EMBD, K, 22)], K);
    const meta = { trait: "t", source: "test" };
    const pl = layerMatrix(N_LAYER + 1, N_EMBD, randomVector((N_LAYER + 1) * N_EMBD, 2));
    spanFile = path.join(dir, "t.safetensors");
    await writeVectors(spanFile, { tensors: { prompt_last: pl }, spans: { prompt_last: span }, meta });
    // The same basis as K ordinary vectors files, row j of every layer in file j.
    rowFiles = [];
    for (let j = 0; j < K; j++) {
      const m = layerMatrix(N_LAYER + 1, N_EMBD);
      for (let l = 1; l <= N_LAYER; l++) m.data.set(spanRows(span, l)[j]!, l * N_EMBD);
      rowFiles.push(path.join(dir, `row${j}.safetensors`));
      await writeVectors(rowFiles[j]!, { tensors: { response_avg: m }, meta });
    }
    const tokens = await model.tokenize("the cat sat on the mat and the dog ate a bone and then it slept");
    sample = { tokens, promptLength: 6 };
  });
  after(async () => {
    await model?.dispose();
    await engine?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  const specsOf = (...args: string[]) => steeringSpecs(args.flatMap(parseSteeringRef), model.info);

  it("refuses more training steering ops than the graph can hold, before reading any data", async () => {
    const [op] = await specsOf(`${spanFile}#prompt_last_span:1:1:all:ablate`);
    const steering = Array.from({ length: MAX_TRAIN_STEERING + 1 }, () => op!);
    await assert.rejects(finetune({ model, data: path.join(dir, "absent.jsonl"), out: path.join(dir, "never.gguf"), steering }), personaError("E_BAD_STEER_ARG", /at most 8192/));
  });

  it("equals one ablation per basis row, and every row keeps no component in the span", async () => {
    const specs = await specsOf(`${spanFile}#prompt_last_span:1-${N_LAYER}:1:all:ablate`);
    assert.equal(specs.length, K * N_LAYER);
    const single = await specsOf(...rowFiles.map((f) => `${f}:1-${N_LAYER}:1:all:ablate`));
    const [a] = await model.capture([sample], { steering: model.steering(specs) });
    const [b] = await model.capture([sample], { steering: model.steering([...single].sort((x, y) => x.layer - y.layer)) });
    for (const key of ["promptLast", "promptAvg", "responseAvg"] as const) assert.deepEqual(a![key], b![key], key);
    // Per response token (and the prompt's last row and mean) along every basis row at every layer.
    const probes = model.probes(spanLayers().flatMap((l) => spanRows(span, l).map((vector) => ({ layer: l, vector: Float32Array.from(vector) }))), { perToken: true });
    const [ablated] = await model.project([sample], probes, { steering: model.steering(specs) });
    const [plain] = await model.project([sample], probes);
    const worst = (p: typeof plain) => Math.max(...[p!.promptLast, p!.promptAvg, p!.perToken!].flatMap((x) => Array.from(x, Math.abs)));
    assert.ok(worst(plain) > 0.1, `the plain rows should have a component in the span: ${worst(plain)}`);
    assert.ok(worst(ablated) < 1e-4 * worst(plain), `left in the span: ${worst(ablated)} (plain ${worst(plain)})`);
  });

  it("inside the training graph equals inference under the same ablation, even with hundreds of ops in one graph", async () => {
    // Ablating a span again changes nothing, so four times over is the same steering in 4·K·n_layer
    // ops: more than the training graph held before its size counted steering ops (a GGML_ASSERT).
    const once = await specsOf(`${spanFile}#prompt_last_span:1-${N_LAYER}:1:all:ablate`);
    const specs = [...once, ...once, ...once, ...once];
    const corpus = await model.tokenize("the cat sat on the mat and the dog ate a bone. ".repeat(12));
    const W = 32;
    const windows = [0, 2].map((k) => corpus.slice(k * W, k * W + W + 1));
    const r = await model.train({ windows, contextLength: W, epochs: 1, learningRate: 1e-12, valWindows: 1, steering: specs });
    const loss = async (s: typeof specs) => {
      const [lp] = await model.logprobs([{ prompt: windows[1]!.subarray(0, 1), continuation: windows[1]!.subarray(1), steering: model.steering(s) }], { exact: true });
      return -lp!.total / W;
    };
    const [want, plain] = [await loss(specs), await loss([])];
    assert.ok(Math.abs(r.valLosses![0]! - want) < 1e-4, `training graph ${r.valLosses![0]} vs inference ${want}`);
    assert.ok(Math.abs(want - plain) > 1e-2, `the ablation should change the loss: ${want} vs ${plain}`);
  });

  it("refuses a span anywhere but ablation, and a file without one", async () => {
    await assert.rejects(specsOf(`${spanFile}#prompt_last_span:1:2`), personaError("E_BAD_STEER_ARG", /can only be ablated/));
    await assert.rejects(specsOf(`${spanFile}#prompt_last_span:1:2:all:cap`), personaError("E_BAD_STEER_ARG", /can only be ablated/));
    await assert.rejects(specsOf(`${rowFiles[0]}#prompt_last_span:1:1:all:ablate`), personaError("E_NOT_FOUND", /holds no prompt_last_span.*--span/));
  });
});

function spanLayers(): number[] {
  return Array.from({ length: N_LAYER }, (_, i) => i + 1);
}
