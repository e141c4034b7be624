/**
 * Training through our own ggml graph on tiny synthetic F32 models: the loss falls and the model
 * memorises a pattern, the reported loss is the true next-token cross-entropy, inference on the
 * same model sees the new weights, save + reload reproduces logits and keeps the metadata, a
 * narrower `trainable` leaves the other tensors alone, bad input is refused before llama.cpp
 * sees it, and cancellation stops between steps.
 *
 * The engine runs with one thread: ggml's threads spin at barriers, so on a 2-core machine shared
 * with other processes two threads can be a hundred times slower than one.
 */
import assert from "node:assert/strict";
import { copyFile, mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import type { Model } from "../src/engine/Model.js";
import type { SteeringSpec } from "../src/engine/steering.js";
import { readGguf, readTensorF32 } from "../src/engine/gguf/reader.js";
import { writeSyntheticModel, type SyntheticModelConfig } from "../src/engine/gguf/synthetic.js";
import { learningRateAt, shuffled } from "../src/engine/train/options.js";
import { saveLora } from "../src/engine/train/save.js";
import { personaError } from "./helpers/errors.js";

const TINY: SyntheticModelConfig = {
  arch: "llama",
  nLayer: 2,
  nEmbd: 64,
  nHead: 4,
  nHeadKv: 2,
  nFf: 128,
  contextLength: 256,
  seed: 3,
};
const W = 32;

let dir: string;
let engine: Engine;
let source: string;
let corpus: Int32Array;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-train-"));
  engine = await Engine.create({ gpu: "cpu", threads: 1 });
  source = path.join(dir, "tiny.gguf");
  await writeSyntheticModel(source, TINY);
  const probe = await engine.loadModel(source);
  corpus = await probe.tokenize("the cat sat on the mat and the dog ate a bone. ".repeat(60));
  await probe.dispose();
});

after(async () => {
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});


async function topLogprobs(m: Model, prompts: Int32Array[]): Promise<number[][]> {
  const res = await m.logprobs(prompts.map((prompt) => ({ prompt, topK: 8 })), { exact: true });
  return res.map((r) => r.top.flatMap((t) => [t.token, t.logprob]));
}

describe("training", () => {
  let model: Model;
  const prompts = () => [corpus.subarray(0, 5), corpus.subarray(7, 19), corpus.subarray(3, 40)];

  before(async () => {
    model = await engine.loadModel(source, { noMmap: true });
  });

  it("lowers the loss, memorises the pattern, and inference on the same model sees the new weights", async () => {
    const before = await topLogprobs(model, prompts());
    const events: { step: number; epochDone: boolean; valLoss?: number }[] = [];
    const r = await model.train({
      tokens: corpus,
      contextLength: W,
      epochs: 30,
      learningRate: 1e-3,
      warmupSteps: 5,
      valFraction: 0.1,
      onProgress: (p) => events.push(p),
    });
    const nWindows = Math.floor((corpus.length - W - 1) / W) + 1;
    const nVal = Math.round(nWindows * 0.1);
    assert.equal(r.steps, 30 * (nWindows - nVal));
    assert.equal(r.losses.length, 30);
    assert.equal(r.valLosses?.length, 30);
    // A 27-token sentence repeated: all but each window's first tokens are predictable.
    assert.ok(r.losses[29]! < 0.05 * r.losses[0]!, `losses ${r.losses.map((l) => l.toFixed(3)).join(" ")}`);
    assert.ok(r.valLosses![29]! < 0.05 * r.valLosses![0]!, `val losses ${r.valLosses!.join(" ")}`);
    // One event per step plus one closing each epoch, which carries the validation loss.
    assert.equal(events.filter((e) => !e.epochDone).length, r.steps);
    assert.deepEqual(events.filter((e) => e.epochDone).map((e) => e.valLoss), r.valLosses);
    // Every weight trains: embeddings, attention (K and V included) and the untied output projection.
    for (const t of ["token_embd.weight", "blk.0.attn_k.weight", "blk.1.attn_v.weight", "output.weight"]) assert.ok(r.trainableTensors.includes(t), t);
    assert.equal(r.trainableTensors.length, 3 + TINY.nLayer * 9);

    const after = await topLogprobs(model, prompts());
    assert.notDeepEqual(after, before, "inference did not see the trained weights");

    // Greedy generation continues the memorised sentence.
    const prompt = corpus.subarray(0, 12);
    const [g] = await model.generate([{ prompt }], { temperature: 0, maxTokens: 12 });
    assert.deepEqual([...g!.tokens], [...corpus.subarray(12, 24)]);
  });

  it("reports the true next-token cross-entropy as the validation loss", async () => {
    // The validation loss is computed after the epoch's last step, so inference on the same
    // weights must give the same mean -log P of the held-out window's labels.
    const starts = [0, 4, 9].map((k) => k * W);
    const windows = starts.map((s) => corpus.slice(s, s + W + 1));
    const r = await model.train({ windows, contextLength: W, epochs: 1, learningRate: 1e-4, valFraction: 0.34 });
    const held = windows.slice(windows.length - 1);
    const lp = await model.logprobs(
      held.map((w) => ({ prompt: w.subarray(0, 1), continuation: w.subarray(1) })),
      { exact: true },
    );
    const nll = -lp.reduce((a, x) => a + x.total, 0) / (held.length * W);
    assert.ok(Math.abs(r.valLosses![0]! - nll) < 1e-4, `optimiser says ${r.valLosses![0]}, inference says ${nll}`);
  });

  it("trains packed documents as if each were alone when given documentStart", async () => {
    // A window holding two documents that open with token S: under documentStart = S its loss is
    // the sum of each document's loss scored alone from position 0; without it, it is not.
    const S = corpus[0]!;
    const body = [...corpus.subarray(1, 40)].filter((t) => t !== S);
    const a = body.slice(0, 13);
    const b = body.slice(13, 13 + W - a.length - 2);
    const win = Int32Array.from([S, ...a, S, ...b, body[30]!]);
    assert.equal(win.length, W + 1);
    const windows = [corpus.slice(0, W + 1), win];
    const opts = { windows, contextLength: W, epochs: 1, learningRate: 1e-12, valFraction: 0.5 };
    const packed = await model.train({ ...opts, documentStart: S, batchWindows: 1 });
    const plain = await model.train(opts);
    const k = a.length + 1; // index of the second S
    const alone = await model.logprobs(
      [
        { prompt: win.subarray(0, 1), continuation: win.subarray(1, k + 1) },
        { prompt: win.subarray(k, k + 1), continuation: win.subarray(k + 1) },
      ],
      { exact: true },
    );
    const nll = -(alone[0]!.total + alone[1]!.total) / W;
    assert.ok(Math.abs(packed.valLosses![0]! - nll) < 1e-4, `packed ${packed.valLosses![0]} vs alone ${nll}`);
    assert.ok(Math.abs(plain.valLosses![0]! - nll) > 1e-3, `without documentStart the loss should differ: ${plain.valLosses![0]} vs ${nll}`);
  });

  it("saves weights that reload to identical logits, with the source's metadata", async () => {
    const file = path.join(dir, "trained.gguf");
    await model.save(file);
    const reloaded = await engine.loadModel(file);
    try {
      assert.deepEqual(await topLogprobs(reloaded, prompts()), await topLogprobs(model, prompts()));
      assert.equal(reloaded.info.chatTemplate, model.info.chatTemplate);
      assert.equal(reloaded.info.nCtxTrain, TINY.contextLength);
      const pristine = await engine.loadModel(source);
      assert.notDeepEqual(await topLogprobs(pristine, prompts()), await topLogprobs(reloaded, prompts()));
      await pristine.dispose();
      // Every weight moved, attention's K and V included (llama.cpp's own optimiser leaves those two).
      const [fs, ft] = [await readGguf(source, { maxArrayItems: 0 }), await readGguf(file, { maxArrayItems: 0 })];
      for (const t of fs.tensors) {
        const [a, b] = [await readTensorF32(fs, t.name), await readTensorF32(ft, t.name)];
        assert.ok(Buffer.compare(Buffer.from(a.buffer), Buffer.from(b.buffer)) !== 0, `${t.name} did not change`);
      }
    } finally {
      await reloaded.dispose();
    }
  });

  it("trains only the tensors `trainable` selects, also after a full run", async () => {
    const a = path.join(dir, "a.gguf");
    const b = path.join(dir, "b.gguf");
    await model.save(a);
    const r = await model.train({ tokens: corpus, contextLength: W, epochs: 1, learningRate: 1e-3, trainable: /^output\.weight$/ });
    assert.deepEqual(r.trainableTensors, ["output.weight"]);
    assert.equal(r.trainableParams, TINY.nEmbd * model.info.nVocab);
    await model.save(b);
    const [fa, fb] = [await readGguf(a, { maxArrayItems: 0 }), await readGguf(b, { maxArrayItems: 0 })];
    for (const t of fa.tensors) {
      const [va, vb] = [await readTensorF32(fa, t.name), await readTensorF32(fb, t.name)];
      const same = Buffer.compare(Buffer.from(va.buffer), Buffer.from(vb.buffer)) === 0;
      assert.equal(same, t.name !== "output.weight", `tensor ${t.name} ${same ? "unchanged" : "changed"}`);
    }
  });

  it("stops between steps when cancelled and stays usable", async () => {
    const ac = new AbortController();
    let seen = 0;
    await assert.rejects(
      model.train({
        tokens: corpus,
        contextLength: W,
        epochs: 50,
        learningRate: 1e-4,
        signal: ac.signal,
        onProgress: () => {
          if (++seen === 3) ac.abort();
        },
      }),
      "E_ABORTED",
    );
    assert.ok(seen < 50, `ran ${seen} steps after the abort`);
    assert.equal((await topLogprobs(model, prompts())).length, 3);
  });
});

describe("gradients", () => {
  it("one SGD step lowers the loss by lr·|g|², to first order, with g read off the weight change", async () => {
    const m = await engine.loadModel(source, { noMmap: true });
    try {
      const w = corpus.slice(0, W + 1);
      const loss = async () => -(await m.logprobs([{ prompt: w.subarray(0, 1), continuation: w.subarray(1) }], { exact: true }))[0]!.total / W;
      const [before, after] = [path.join(dir, "sgd-before.gguf"), path.join(dir, "sgd-after.gguf")];
      await m.save(before);
      const l0 = await loss();
      const lr = 1e-2;
      await m.train({ windows: [w], contextLength: W, epochs: 1, learningRate: lr, minLearningRate: lr, optimizer: "sgd" });
      await m.save(after);
      const l1 = await loss();
      const [fa, fb] = [await readGguf(before, { maxArrayItems: 0 }), await readGguf(after, { maxArrayItems: 0 })];
      let g2 = 0;
      for (const t of fa.tensors) {
        const [a, b] = [await readTensorF32(fa, t.name), await readTensorF32(fb, t.name)];
        for (let i = 0; i < a.length; i++) g2 += ((a[i]! - b[i]!) / lr) ** 2;
      }
      const predicted = lr * g2;
      assert.ok(predicted > 1e-3, `too small a step to measure: ${predicted}`);
      assert.ok(Math.abs(l0 - l1 - predicted) < 0.1 * predicted, `loss fell by ${l0 - l1}, first order predicts ${predicted}`);
    } finally {
      await m.dispose();
    }
  });
});

/** A fixed pseudo-random vector of the model's width. */
function direction(seed: number, scale: number): Float32Array {
  return Float32Array.from({ length: TINY.nEmbd }, (_, i) => scale * Math.sin(seed * 12.9898 + i * 78.233));
}

/** Preventative steering at two layers at once, then CAFT ablation of another direction (not fully: coef 0.8). */
const STEERED: SteeringSpec[] = [
  { vector: direction(1, 0.6), layer: 1, coef: 2 },
  { vector: direction(2, 1), layer: 2, coef: -1.5 },
  { vector: direction(3, 1), layer: 1, coef: 0.8, mode: "ablate" },
];

describe("steering and masks inside the training graph", () => {
  let m: Model;
  before(async () => {
    m = await engine.loadModel(source, { noMmap: true });
  });
  after(async () => {
    await m.dispose();
  });

  /** Mean -log P of window w's tokens whose mask is 1, by inference under `steering`. */
  async function inferenceLoss(w: Int32Array, specs: SteeringSpec[], mask?: Uint8Array): Promise<number> {
    const steering = m.steering(specs);
    const [lp] = await m.logprobs([{ prompt: w.subarray(0, 1), continuation: w.subarray(1), steering }], { exact: true });
    let sum = 0;
    let n = 0;
    lp!.continuation.forEach((l, k) => {
      if (mask && mask[k + 1] !== 1) return;
      sum -= l;
      n++;
    });
    return sum / n;
  }

  it("the training forward with add at several layers and ablate equals inference under the same steering", async () => {
    const windows = [0, 5].map((k) => corpus.slice(k * W, k * W + W + 1));
    const opts = { windows, contextLength: W, epochs: 1, learningRate: 1e-12, valWindows: 1 };
    const steered = await m.train({ ...opts, steering: STEERED });
    const plain = await m.train(opts);
    const [want, wantPlain] = [await inferenceLoss(windows[1]!, STEERED), await inferenceLoss(windows[1]!, [])];
    assert.ok(Math.abs(steered.valLosses![0]! - want) < 1e-4, `training graph ${steered.valLosses![0]} vs inference ${want}`);
    assert.ok(Math.abs(plain.valLosses![0]! - wantPlain) < 1e-4, `unsteered ${plain.valLosses![0]} vs ${wantPlain}`);
    assert.ok(Math.abs(want - wantPlain) > 1e-2, `the steering should change the loss: ${want} vs ${wantPlain}`);
  });

  it("a mean-preserving ablation in the training forward equals inference with the same kept means", async () => {
    const windows = [0, 5].map((k) => corpus.slice(k * W, k * W + W + 1));
    // Tokens 0-9 are the prompt, so token 9 is the last prompt token in both.
    const P = 10;
    const mask = new Uint8Array(W + 1).fill(1, P);
    const zero: SteeringSpec[] = [{ vector: direction(3, 1), layer: 1, coef: 1, mode: "ablate" }];
    const kept: SteeringSpec[] = [{ ...zero[0]!, mean: 1.5, lastPromptMean: -4 }];
    const loss = async (specs: SteeringSpec[]) => {
      const [lp] = await m.logprobs([{ prompt: windows[1]!.subarray(0, P), continuation: windows[1]!.subarray(P), steering: m.steering(specs) }], { exact: true });
      return -lp!.total / (W + 1 - P);
    };
    const r = await m.train({ windows, labelMask: [mask, mask], contextLength: W, epochs: 1, learningRate: 1e-12, valWindows: 1, steering: kept });
    const [want, wantOneMean, wantZero] = [await loss(kept), await loss([{ ...kept[0]!, lastPromptMean: 1.5 }]), await loss(zero)];
    assert.ok(Math.abs(r.valLosses![0]! - want) < 1e-4, `training graph ${r.valLosses![0]} vs inference ${want}`);
    assert.ok(Math.abs(want - wantZero) > 1e-2 && Math.abs(want - wantOneMean) > 1e-3, `each kept mean should change the loss: ${want} vs ${wantOneMean} vs ${wantZero}`);
  });

  it("scores only the masked tokens (response-only loss), with documents flagged where no token opens them", async () => {
    const win = corpus.slice(3 * W, 4 * W + 1);
    const mask = new Uint8Array(W + 1);
    mask.fill(1, 6, 14);
    mask.fill(1, 20, W + 1);
    const opts = { windows: [corpus.slice(0, W + 1), win], labelMask: [new Uint8Array(W + 1).fill(1), mask], contextLength: W, epochs: 1, learningRate: 1e-12, valWindows: 1 };
    const r = await m.train(opts);
    const want = await inferenceLoss(win, [], mask);
    assert.ok(Math.abs(r.valLosses![0]! - want) < 1e-4, `masked loss ${r.valLosses![0]} vs inference ${want}`);
    // A second document flagged at 16: scored tokens after it see only their own document.
    const starts = new Uint8Array(W + 1);
    starts[16] = 1;
    const split = await m.train({ ...opts, documentStarts: [new Uint8Array(W + 1), starts] });
    const [a, b] = [await inferenceLoss(win.subarray(0, 16), [], mask.subarray(0, 16)), await inferenceLoss(win.subarray(16), [], mask.subarray(16))];
    const [na, nb] = [mask.subarray(1, 16).reduce((x, y) => x + y, 0), mask.subarray(17).reduce((x, y) => x + y, 0)];
    // Token 16 (the second document's first) is unscored, so no target straddles the boundary.
    const expected = (a * na + b * nb) / (na + nb);
    assert.ok(Math.abs(split.valLosses![0]! - expected) < 1e-4, `split ${split.valLosses![0]} vs ${expected}`);
    await assert.rejects(m.train({ ...opts, labelMask: [mask, new Uint8Array(W + 1)] }), personaError("E_BAD_INPUT", /no scored token/));
  });

  /**
   * One SGD step over `windows` (all in one optimiser step) gives the gradient (w0 − w1)/lr; its
   * two largest entries in each named tensor must match central finite differences of the
   * inference loss (mean over the windows' tokens) under `specs`. The step's reported loss must be
   * that inference loss.
   */
  async function assertGradientsMatch(windows: Int32Array[], specs: SteeringSpec[], names: string[]): Promise<void> {
    const fresh = await engine.loadModel(source, { noMmap: true });
    // Large enough that the weight change resolves small gradients in float32 (SGD's step is exact).
    const lr = 0.1;
    const stepped = path.join(dir, "fd-stepped.gguf");
    let stepLoss: number;
    try {
      const r = await fresh.train({ windows, contextLength: W, epochs: 1, learningRate: lr, minLearningRate: lr, optimizer: "sgd", steering: specs, batchWindows: windows.length });
      assert.equal(r.steps, 1);
      stepLoss = r.losses[0]!;
      await fresh.save(stepped);
    } finally {
      await fresh.dispose();
    }
    const inferenceLossOf = async (pm: Model) => {
      const steering = pm.steering(specs);
      const lps = await pm.logprobs(windows.map((w) => ({ prompt: w.subarray(0, 1), continuation: w.subarray(1), steering })), { exact: true });
      return -lps.reduce((a, lp) => a + lp.total, 0) / (W * windows.length);
    };
    const base = await engine.loadModel(source);
    const l0 = await inferenceLossOf(base).finally(() => base.dispose());
    assert.ok(Math.abs(stepLoss - l0) < 1e-4, `training forward ${stepLoss} vs inference ${l0}`);
    const [f0, f1] = [await readGguf(source, { maxArrayItems: 0 }), await readGguf(stepped, { maxArrayItems: 0 })];
    const h = 1e-2;
    for (const name of names) {
      const [a, b] = [await readTensorF32(f0, name), await readTensorF32(f1, name)];
      const g = Float64Array.from(a, (x, i) => (x - b[i]!) / lr);
      const top = [...g.keys()].sort((i, j) => Math.abs(g[j]!) - Math.abs(g[i]!)).slice(0, 2);
      const t = f0.tensorsByName.get(name)!;
      for (const idx of top) {
        const loss = async (delta: number) => {
          const file = path.join(dir, "fd.gguf");
          await copyFile(source, file);
          const fh = await open(file, "r+");
          const v = Buffer.alloc(4);
          v.writeFloatLE(a[idx]! + delta);
          await fh.write(v, 0, 4, f0.dataOffset + t.offset + 4 * idx);
          await fh.close();
          const pm = await engine.loadModel(file);
          return inferenceLossOf(pm).finally(() => pm.dispose());
        };
        const fd = ((await loss(h)) - (await loss(-h))) / (2 * h);
        assert.ok(Math.abs(fd - g[idx]!) < 0.03 * Math.abs(g[idx]!) + 1e-5, `${name}[${idx}]: graph gradient ${g[idx]}, finite difference ${fd}`);
      }
    }
  }

  it("gradients through the steering ops match central finite differences", async () => {
    // Block 0 sits under both steered layers; the output weights above them.
    await assertGradientsMatch([corpus.slice(0, W + 1)], STEERED, ["blk.0.ffn_down.weight", "blk.1.attn_v.weight"]);
  });

  it("several windows per step on a grouped-query-attention model: the forward and the gradients of Q, K and V are right", async () => {
    // TINY has 4 query heads over 2 KV heads; windows of different text, so a window reading
    // another's keys would change both the loss and the gradients.
    assert.ok(TINY.nHeadKv < TINY.nHead);
    await assertGradientsMatch([0, 3, 7].map((k) => corpus.slice(k * W + k, k * W + k + W + 1)), [], ["blk.0.attn_k.weight", "blk.1.attn_v.weight", "blk.0.attn_q.weight"]);
  });

  it("refuses steering it cannot apply before llama.cpp sees it", async () => {
    const ok = { tokens: corpus, contextLength: W, epochs: 1, learningRate: 1e-3 };
    await assert.rejects(m.train({ ...ok, steering: [{ vector: new Float32Array(TINY.nEmbd + 1), layer: 1, coef: 1 }] }), personaError("E_SHAPE", /n_embd/));
    await assert.rejects(m.train({ ...ok, steering: [{ vector: direction(1, 1), layer: 3, coef: 1 }] }), personaError("E_SHAPE", /out of range/));
    await assert.rejects(m.train({ ...ok, steering: [{ vector: direction(1, 1), layer: 1, coef: 1, positions: "response" }] }), personaError("E_BAD_STEER_ARG", /every position/));
  });
});

describe("qwen2 and determinism", () => {
  it("trains qwen2 (q/k/v biases, NEOX RoPE): the training forward equals inference, and the biases train", async () => {
    const file = path.join(dir, "qwen2.gguf");
    await writeSyntheticModel(file, { ...TINY, arch: "qwen2" });
    const m = await engine.loadModel(file, { noMmap: true });
    try {
      const tokens = await m.tokenize("the cat sat on the mat and the dog ate a bone. ".repeat(12));
      const windows = [0, 1, 2].map((k) => tokens.slice(k * W, k * W + W + 1));
      const probe = await m.train({ windows, contextLength: W, epochs: 1, learningRate: 1e-12, valWindows: 1 });
      const held = windows[2]!;
      const nll = -(await m.logprobs([{ prompt: held.subarray(0, 1), continuation: held.subarray(1) }], { exact: true }))[0]!.total / W;
      assert.ok(Math.abs(probe.valLosses![0]! - nll) < 1e-4, `qwen2 training graph ${probe.valLosses![0]} vs inference ${nll}`);
      const r = await m.train({ windows, contextLength: W, epochs: 3, learningRate: 1e-3 });
      assert.ok(r.trainableTensors.includes("blk.1.attn_k.bias"));
      const out = path.join(dir, "qwen2-trained.gguf");
      await m.save(out);
      const [a, b] = [await readGguf(file, { maxArrayItems: 0 }), await readGguf(out, { maxArrayItems: 0 })];
      const [ba, bb] = [await readTensorF32(a, "blk.0.attn_v.bias"), await readTensorF32(b, "blk.0.attn_v.bias")];
      assert.notDeepEqual(ba, bb, "the v bias did not train");
    } finally {
      await m.dispose();
    }
  });

  it("gives identical weights for the same data, seed and thread count", async () => {
    const files: string[] = [];
    for (const k of [0, 1]) {
      const m = await engine.loadModel(source, { noMmap: true });
      await m.train({ tokens: corpus.subarray(0, 8 * W + 1), contextLength: W, epochs: 3, learningRate: 1e-3, seed: 7, steering: STEERED.slice(0, 1) });
      files.push(path.join(dir, `det-${k}.gguf`));
      await m.save(files[k]!);
      await m.dispose();
    }
    const [a, b] = await Promise.all(files.map((f) => readFile(f)));
    assert.ok(a!.equals(b!), "two identical runs wrote different weights");
  });
});

describe("LoRA training", () => {
  it("trains an adapter that llama.cpp loads to the trainer's own loss (plain and rsLoRA scaling), weights untouched", async () => {
    const m = await engine.loadModel(source);
    const windows = [0, 3, 6].map((k) => corpus.slice(k * W, k * W + W + 1));
    const held = windows[2]!;
    const nll = async (model: Model) => -(await model.logprobs([{ prompt: held.subarray(0, 1), continuation: held.subarray(1) }], { exact: true }))[0]!.total / W;
    try {
      const before = await nll(m);
      for (const rslora of [false, true]) {
        const r = await m.train({ windows, contextLength: W, epochs: 10, learningRate: 3e-2, valWindows: 1, steering: STEERED.slice(0, 1), lora: { rank: 4, alpha: 8, rslora, targets: ["q", "v", "down"] } });
        assert.equal(r.lora!.tensors.length, TINY.nLayer * 3);
        assert.equal(r.lora!.scale, rslora ? 4 : 2);
        assert.deepEqual(r.trainableTensors.slice(0, 2), ["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"]);
        assert.ok(r.losses[9]! < 0.97 * r.losses[0]!, `losses ${r.losses.join(" ")}`);
        assert.equal(await nll(m), before, "LoRA training changed the base weights");
        const file = path.join(dir, `adapter-${rslora}.gguf`);
        await saveLora(file, "llama", r.lora!);
        const adapted = await engine.loadModel(source, { loras: [{ path: file }] });
        try {
          const steered = -(await adapted.logprobs([{ prompt: held.subarray(0, 1), continuation: held.subarray(1), steering: adapted.steering(STEERED.slice(0, 1)) }], { exact: true }))[0]!.total / W;
          assert.ok(Math.abs(steered - r.valLosses![9]!) < 1e-4, `llama.cpp with the adapter ${steered} vs trainer ${r.valLosses![5]}`);
        } finally {
          await adapted.dispose();
        }
      }
    } finally {
      await m.dispose();
    }
  });
});

describe("bad input is refused before llama.cpp sees it", () => {
  it("refuses models it cannot train, and bad windows, then still works", async () => {
    const mapped = await engine.loadModel(source);
    await assert.rejects(mapped.train({ tokens: corpus, contextLength: W, epochs: 1, learningRate: 1e-3 }), personaError("E_BAD_INPUT", /noMmap/));
    await mapped.dispose();

    const f16 = path.join(dir, "f16.gguf");
    await writeSyntheticModel(f16, { ...TINY, type: "f16" });
    const half = await engine.loadModel(f16, { noMmap: true });
    await assert.rejects(half.train({ tokens: corpus, contextLength: W, epochs: 1, learningRate: 1e-3 }), personaError("E_BAD_MODEL", /F32/));
    await half.dispose();

    const m = await engine.loadModel(source, { noMmap: true });
    const ok = { contextLength: W, epochs: 1, learningRate: 1e-3 };
    const bad = corpus.slice(0, 100);
    bad[50] = m.info.nVocab;
    await assert.rejects(m.train({ ...ok, tokens: bad }), personaError("E_BAD_INPUT", /outside the vocabulary/));
    await assert.rejects(m.train({ ...ok, windows: [corpus.slice(0, W + 2)] }), personaError("E_BAD_INPUT", /contextLength \+ 1/));
    await assert.rejects(m.train({ ...ok, tokens: corpus, contextLength: 512 }), personaError("E_BAD_INPUT", /training context/));
    await assert.rejects(m.train({ ...ok, tokens: corpus.slice(0, W) }), personaError("E_BAD_INPUT", /no training windows/));
    await assert.rejects(m.train({ ...ok, tokens: corpus, trainable: /^no-such-tensor$/ }), personaError("E_BAD_INPUT", /selects no tensor/));
    await assert.rejects(m.train({ ...ok, tokens: corpus, batchWindows: 1000 }), personaError("E_BAD_INPUT", /batchWindows/));
    await assert.rejects(m.train({ ...ok, tokens: corpus, documentStart: m.info.nVocab }), personaError("E_BAD_INPUT", /documentStart/));
    await assert.rejects(m.train({ ...ok, tokens: corpus, weightDecay: 2 }), personaError("E_BAD_INPUT", /weightDecay/));
    await assert.rejects(m.train({ ...ok, tokens: corpus, learningRate: 0 }), personaError("E_BAD_INPUT", /learningRate/));
    await assert.rejects(m.save(path.join(dir, "no-such-dir", "x.gguf")), personaError("E_NOT_FOUND"));
    const r = await m.train({ ...ok, tokens: corpus.slice(0, 4 * W + 1) });
    assert.equal(r.steps, 4);
    await m.dispose();
  });
});

describe("schedule", () => {
  it("warms up linearly, then decays by a cosine to the floor, never reaching 0", () => {
    const s = { learningRate: 1, minLearningRate: 0.1, warmupSteps: 4 };
    assert.deepEqual([0, 1, 2, 3].map((i) => learningRateAt(s, i, 15)), [0.25, 0.5, 0.75, 1]);
    assert.equal(learningRateAt(s, 4, 15), 1);
    assert.ok(Math.abs(learningRateAt(s, 9, 15) - 0.55) < 1e-12);
    assert.ok(Math.abs(learningRateAt(s, 14, 15) - 0.1) < 1e-12);
    assert.ok(learningRateAt({ ...s, minLearningRate: 0 }, 14, 15) > 0);
  });

  it("shuffles reproducibly", () => {
    const a = shuffled(100, 7);
    assert.deepEqual([...a].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i));
    assert.deepEqual(a, shuffled(100, 7));
    assert.notDeepEqual(a, shuffled(100, 8));
  });
});
