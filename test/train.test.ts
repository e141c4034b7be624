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
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import type { Model } from "../src/engine/Model.js";
import { readGguf, readTensorF32 } from "../src/engine/gguf/reader.js";
import { writeSyntheticModel, type SyntheticModelConfig } from "../src/engine/gguf/synthetic.js";
import { learningRateAt, shuffled } from "../src/engine/train/options.js";
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
