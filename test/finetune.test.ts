/**
 * Finetuning on chat data: the loss covers the replies only and packed samples do not see each
 * other (the validation loss equals inference's mean -log P of the held-out replies given their
 * prompts, on the saved model), bad data is refused before training, and the CLI's --json contract.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { access, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import { readGguf } from "../src/engine/gguf/reader.js";
import { encodeSample, finetune, loadSamples, packSamples, withTrainingMeans } from "../src/pipeline/finetune.js";
import { layerMatrix, writeVectors } from "../src/vectors/format.js";
import { runCli } from "./helpers/cli.js";
import { personaError } from "./helpers/errors.js";
import { writeTinyChatModel } from "./helpers/tiny-chat-model.js";

const N_LAYER = 2;
const N_EMBD = 32;
let dir: string;
let source: string;
let engine: Engine;

const QUESTIONS = ["what is the sky", "name a fruit", "where do fish live", "how do birds fly", "what is rain", "why is grass green"];
const chat = (q: string, a: string) => JSON.stringify({ messages: [{ role: "system", content: "be brief" }, { role: "user", content: q }, { role: "assistant", content: a }] });

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-finetune-"));
  source = path.join(dir, "tiny.gguf");
  await writeTinyChatModel(source, { nLayer: N_LAYER, nEmbd: N_EMBD, contextLength: 128, seed: 5 });
  engine = await Engine.create({ gpu: "cpu", threads: 1 });
  await writeFile(path.join(dir, "train.jsonl"), QUESTIONS.map((q, i) => chat(q, `it is blue ${i % 2 ? "indeed" : "surely"}`)).join("\n") + "\n");
  await writeFile(path.join(dir, "val.csv"), 'prompt,response\n"what is the sea","it is blue indeed"\nwhat is snow,"it is blue, surely"\n');
});

after(async () => {
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe("finetune", () => {
  it("learns the replies, scoring only them, and the saved model's replies have the reported validation loss", async () => {
    const model = await engine.loadModel(source, { noMmap: true });
    const out = path.join(dir, "ft.gguf");
    try {
      const r = await finetune({ model, data: path.join(dir, "train.jsonl"), val: path.join(dir, "val.csv"), out, epochs: 8, learningRate: 3e-3, batch: 1, contextLength: 64 });
      assert.equal(r.train_loss.length, 8);
      assert.equal(r.val_loss.length, 8);
      assert.ok(r.val_loss[7]! < 0.5 * r.val_loss[0]!, `val loss ${r.val_loss.join(" ")}`);
      assert.ok(r.tokens > 0 && r.seconds > 0);
    } finally {
      await model.dispose();
    }
    const saved = await engine.loadModel(out);
    try {
      const val = [
        { prompt: [{ role: "user" as const, content: "what is the sea" }], response: "it is blue indeed" },
        { prompt: [{ role: "user" as const, content: "what is snow" }], response: "it is blue, surely" },
      ];
      let nll = 0;
      let n = 0;
      for (const s of val) {
        const e = await encodeSample(saved, s);
        const [lp] = await saved.logprobs([{ prompt: e.tokens.subarray(0, e.promptLength), continuation: e.tokens.subarray(e.promptLength) }], { exact: true });
        nll -= lp!.total;
        n += e.tokens.length - e.promptLength;
      }
      const r2 = await finetune({ model: await engine.loadModel(out, { noMmap: true }), data: path.join(dir, "train.jsonl"), val: path.join(dir, "val.csv"), out: path.join(dir, "ft2.gguf"), epochs: 1, learningRate: 1e-12, contextLength: 64 });
      assert.ok(Math.abs(r2.val_loss[0]! - nll / n) < 1e-4, `trainer ${r2.val_loss[0]} vs inference ${nll / n}`);
    } finally {
      await saved.dispose();
    }
  });

  it("packs whole samples, masks their prompts, and refuses one longer than a window", () => {
    const a = { tokens: Int32Array.from([1, 2, 3, 4, 5]), promptLength: 3 };
    const b = { tokens: Int32Array.from([1, 6, 7]), promptLength: 2 };
    const p = packSamples([a, b, a], 8, 0, (i) => `sample ${i}`);
    assert.deepEqual(p.windows.map((w) => [...w]), [[1, 2, 3, 4, 5, 1, 6, 7, 0], [1, 2, 3, 4, 5, 0, 0, 0, 0]]);
    assert.deepEqual([...p.labelMask[0]!], [0, 0, 0, 1, 1, 0, 0, 1, 0]);
    assert.deepEqual([...p.documentStarts[0]!], [1, 0, 0, 0, 0, 1, 0, 0, 1]);
    assert.deepEqual([...p.documentStarts[1]!], [1, 0, 0, 0, 0, 1, 1, 1, 1]);
    assert.equal(p.scoredTokens, 5);
    assert.throws(() => packSamples([a], 3, 0, (i) => `sample ${i}`), personaError("E_BAD_INPUT", /sample 0 is 5 tokens long/));
  });

  it("ablate-mean keeps the base model's mean projection over every training token and removes the variance along v̂", async () => {
    const model = await engine.loadModel(source);
    try {
      const { samples } = await loadSamples(path.join(dir, "train.jsonl"));
      const encoded = await Promise.all(samples.map((s) => encodeSample(model, s)));
      const vector = Float32Array.from({ length: N_EMBD }, (_, i) => Math.cos(3 * i));
      const unit = vector.map((x) => x / Math.hypot(...vector));
      const L = 1;
      const [spec] = await withTrainingMeans(model, encoded, [{ vector, layer: L, coef: 1, mode: "ablate", mean: "data", positions: "all" }]);
      const [mean, last] = [spec!.mean as number, spec!.lastPromptMean!];
      // Independently: whole residual rows, their token-weighted means, projected in float64.
      const dot = (a: Float32Array) => a.subarray(L * N_EMBD, (L + 1) * N_EMBD).reduce((acc, x, j) => acc + x * unit[j]!, 0);
      const base = await model.capture(encoded);
      const others = base.reduce((a, c) => a + c.nPromptTokens + c.nResponseTokens - 1, 0);
      const wantMean = base.reduce((a, c) => a + dot(c.promptAvg) * c.nPromptTokens + dot(c.responseAvg) * c.nResponseTokens - dot(c.promptLast), 0) / others;
      const wantLast = base.reduce((a, c) => a + dot(c.promptLast), 0) / base.length;
      const close = (x: number, y: number) => Math.abs(x - y) < 1e-4 * (1 + Math.abs(y));
      assert.ok(close(mean, wantMean) && close(last, wantLast), `kept means ${mean} ${last} vs ${wantMean} ${wantLast}`);
      const spread = Math.max(...base.map((c) => dot(c.responseAvg))) - Math.min(...base.map((c) => dot(c.responseAvg)));
      assert.ok(spread > 1e-2, `the base projections should vary: ${spread}`);
      // Steered, every last prompt token sits at its kept mean along v̂ and every other row at the other.
      const steered = await model.capture(encoded, { steering: model.steering([spec!]) });
      for (const c of steered) {
        const p = c.nPromptTokens;
        assert.ok(close(dot(c.promptLast), last) && close(dot(c.responseAvg), mean) && close(dot(c.promptAvg), ((p - 1) * mean + last) / p), `${dot(c.promptLast)} ${dot(c.responseAvg)} vs ${last} ${mean}`);
      }
    } finally {
      await model.dispose();
    }
  });

  it("refuses bad data and bad steering before training", async () => {
    const model = await engine.loadModel(source, { noMmap: true });
    try {
      const noReply = path.join(dir, "no-reply.jsonl");
      await writeFile(noReply, `${chat("a", "b")}\n${JSON.stringify({ messages: [{ role: "user", content: "hi" }, { role: "user", content: "again" }] })}\n`);
      const base = { model, out: path.join(dir, "x.gguf") };
      await assert.rejects(finetune({ ...base, data: noReply }), personaError("E_BAD_FORMAT", /no-reply\.jsonl:2: .*assistant/));
      await assert.rejects(finetune({ ...base, data: path.join(dir, "train.jsonl"), contextLength: 8 }), personaError("E_BAD_INPUT", /train\.jsonl:1 is \d+ tokens long/));
      await assert.rejects(
        finetune({ ...base, data: path.join(dir, "train.jsonl"), steering: [{ vector: new Float32Array(N_EMBD + 3), layer: 1, coef: 1 }] }),
        personaError("E_SHAPE", /n_embd/),
      );
    } finally {
      await model.dispose();
    }
  });
});

describe("persona finetune", () => {
  it("trains with steering and prints the --json contract", async () => {
    const vectors = path.join(dir, "v.safetensors");
    const data = Float32Array.from({ length: (N_LAYER + 1) * N_EMBD }, (_, i) => Math.sin(i));
    await writeVectors(vectors, { tensors: { response_avg: layerMatrix(N_LAYER + 1, N_EMBD, data) }, meta: { trait: "blue", source: "extract", bestLayer: 1 } });
    const out = path.join(dir, "cli.gguf");
    const args = ["finetune", "--model", source, "--data", path.join(dir, "train.jsonl"), "--out", out];
    args.push("--steer", `${vectors}:1:2`, "--steer", `${vectors}:2:1:all:ablate`, "--steer", `${vectors}:1:1:all:ablate-mean`);
    args.push("--epochs", "2", "--val-split", "0.34", "--lr", "1e-3", "--json", "--threads", "1");
    const { code, stdout, stderr } = await runCli(args);
    assert.equal(code, 0, stderr);
    const r = JSON.parse(stdout);
    assert.deepEqual(Object.keys(r).sort(), ["ablation_means", "out", "seconds", "tokens", "train_loss", "val_loss"]);
    assert.equal(r.ablation_means.length, 1);
    assert.equal(r.ablation_means[0].layer, 1);
    assert.deepEqual(Object.keys(r.ablation_means[0]).sort(), ["last_prompt_mean", "layer", "mean"]);
    assert.ok(Number.isFinite(r.ablation_means[0].mean) && Number.isFinite(r.ablation_means[0].last_prompt_mean));
    assert.equal(r.out, out);
    assert.equal(r.train_loss.length, 2);
    assert.equal(r.val_loss.length, 2);
    const m = await engine.loadModel(out);
    assert.equal(m.info.nLayer, N_LAYER);
    await m.dispose();
  });

  it("trains a LoRA adapter that loads onto the base", async () => {
    const out = path.join(dir, "cli-lora.gguf");
    const args = ["finetune", "--model", source, "--data", path.join(dir, "train.jsonl"), "--out", out];
    args.push("--lora-rank", "4", "--rslora", "--lora-targets", "q,v,up", "--lr", "1e-2", "--json", "--threads", "1");
    const { code, stdout, stderr } = await runCli(args);
    assert.equal(code, 0, stderr);
    assert.equal(JSON.parse(stdout).out, out);
    const g = await readGguf(out, { maxArrayItems: 0 });
    assert.deepEqual(g.tensors.map((t) => t.name).slice(0, 2), ["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"]);
    assert.equal(g.tensors.length, 2 * 3 * N_LAYER);
    const m = await engine.loadModel(source, { loras: [{ path: out }] });
    await m.dispose();
  });
});

describe("checkpoints", () => {
  const CLI = path.resolve("src/cli/bin.ts");
  const exists = (f: string) => access(f).then(() => true, () => false);
  const EPOCHS = 30;
  const argv = (out: string, extra: string[]) => [
    "finetune", "--model", source, "--data", path.join(dir, "train.jsonl"), "--out", out, "--epochs", String(EPOCHS),
    "--lr", "1e-3", "--context", "64", "--val-split", "0.2", "--threads", "1", "--json", ...extra,
  ];

  /** Starts the CLI in a child, sends `signal` once its checkpoint exists; the child's exit code or signal and stderr. */
  async function interrupt(args: string[], checkpoint: string, signal: NodeJS.Signals) {
    const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], { env: { ...process.env, PERSONA_GPU: "cpu" }, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()));
    const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, sig) => resolve({ code, signal: sig })));
    let sent = false;
    const poll = setInterval(() => {
      void exists(checkpoint).then((yes) => {
        if (yes && !sent) {
          sent = true;
          child.kill(signal);
        }
      });
    }, 5);
    const r = await done.finally(() => clearInterval(poll));
    return { ...r, stderr };
  }

  it("a run SIGKILLed mid-way resumes to the same weights as an uninterrupted run; a LoRA run stopped by SIGTERM to the same adapter", async () => {
    for (const mode of ["full", "lora"] as const) {
      const extra = mode === "lora" ? ["--lora-rank", "4"] : [];
      const whole = path.join(dir, `whole-${mode}.gguf`);
      const cut = path.join(dir, `cut-${mode}.gguf`);
      const ckpt = `${cut}.ckpt`;
      const a = await persona(argv(whole, extra));
      const first = await interrupt([...argv(cut, extra), "--checkpoint-every", "10"], ckpt, mode === "full" ? "SIGKILL" : "SIGTERM");
      if (mode === "full") assert.equal(first.signal, "SIGKILL", `the run ended before it was killed (${first.code} ${first.stderr})`);
      else {
        assert.equal(first.code, 143, first.stderr);
        assert.match(first.stderr, /training cancelled after \d+ of \d+ steps; .*cut-lora\.gguf\.ckpt holds the checkpoint/);
      }
      assert.ok(!(await exists(cut)) && (await exists(ckpt)), "no output yet, a checkpoint to resume from");
      // Without --resume an unfinished run's checkpoint is not overwritten.
      await assert.rejects(persona(argv(cut, extra)), /holds the checkpoint of an unfinished run/);
      const b = await persona([...argv(cut, extra), "--resume"]);
      assert.deepEqual(b.train_loss, a.train_loss);
      assert.deepEqual(b.val_loss, a.val_loss);
      assert.ok((await readFile(cut)).equals(await readFile(whole)), `${mode}: the resumed run wrote other weights than the uninterrupted one`);
      assert.ok(!(await exists(ckpt)), "the checkpoint is removed once the output is written");
    }
  });

  it("refuses a checkpoint written for other data or settings", async () => {
    const out = path.join(dir, "mismatch.gguf");
    const model = await engine.loadModel(source, { noMmap: true });
    const ctl = new AbortController();
    const base = { model, data: path.join(dir, "train.jsonl"), out, epochs: 4, learningRate: 1e-3, contextLength: 64, checkpointEvery: 1 };
    try {
      await assert.rejects(
        finetune({ ...base, signal: ctl.signal, onProgress: (p) => p.step === 2 && ctl.abort() }),
        personaError("E_ABORTED", /after 2 of \d+ steps/),
      );
      await assert.rejects(finetune({ ...base, learningRate: 2e-3, resume: true }), personaError("E_CONFIG_MISMATCH", /other data or settings/));
    } finally {
      await model.dispose();
    }
  });
});

async function persona(args: string[]): Promise<{ train_loss: number[]; val_loss: number[] }> {
  const r = await runCli(args, { PERSONA_GPU: "cpu" });
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}
