/**
 * Finetuning on a chat dataset with the project's own trainer: every sample is templated as the
 * model will see it, the loss covers the assistant's reply only (the reference's
 * train-on-responses-only: the reply and the template's end-of-turn tokens), and samples are
 * packed into windows whose documents never see each other. Optional steering during training
 * (preventative `add`, CAFT `ablate`, zero or mean-preserving) rides inside the training graph.
 */
import { unlink } from "node:fs/promises";
import { PersonaError } from "../errors.js";
import type { Model } from "../engine/Model.js";
import type { SteeringSpec } from "../engine/steering.js";
import { checkTrainSteeringCount, type LoraOptions, type TrainProgress } from "../engine/train/options.js";
import { saveLora } from "../engine/train/save.js";
import { readDataset, type TrainingSample } from "./dataset.js";

/** One sample as the trainer sees it: templated tokens, the first `promptLength` of them context only. */
export interface EncodedSample {
  tokens: Int32Array;
  promptLength: number;
}

/** Windows of `contextLength + 1` tokens with their label masks and document-start flags. */
export interface PackedWindows {
  windows: Int32Array[];
  labelMask: Uint8Array[];
  documentStarts: Uint8Array[];
  /** Reply tokens scored per pass over the windows. */
  scoredTokens: number;
}

/**
 * The templated conversation with the reply, split where the templated prompt (with its
 * generation prompt) ends, so the scored part includes the template's end-of-turn tokens. A
 * template that renders the prompt differently once a reply follows falls back to prompt + reply
 * + EOS.
 */
export async function encodeSample(model: Model, s: TrainingSample): Promise<EncodedSample> {
  const prompt = await model.encodeChat(s.prompt, { addGenerationPrompt: true });
  const full = await model.encodeChat([...s.prompt, { role: "assistant", content: s.response }], { addGenerationPrompt: false });
  if (full.length > prompt.length && prompt.every((t, i) => full[i] === t)) return { tokens: full, promptLength: prompt.length };
  const reply = await model.tokenize(s.response, { addSpecial: false });
  const tokens = new Int32Array(prompt.length + reply.length + 1);
  tokens.set(prompt);
  tokens.set(reply, prompt.length);
  tokens[tokens.length - 1] = model.info.eos;
  return { tokens, promptLength: prompt.length };
}

/**
 * Greedy packing in data order: a window takes whole samples while they fit and is padded with
 * `pad` (each pad its own unscored document). A sample longer than a window is an error naming it.
 */
export function packSamples(samples: readonly EncodedSample[], contextLength: number, pad: number, names: (i: number) => string): PackedWindows {
  const size = contextLength + 1;
  const out: PackedWindows = { windows: [], labelMask: [], documentStarts: [], scoredTokens: 0 };
  let tokens = new Int32Array(size);
  let mask = new Uint8Array(size);
  let starts = new Uint8Array(size);
  let used = 0;
  const flush = () => {
    if (used === 0) return;
    tokens.fill(pad, used);
    starts.fill(1, used);
    out.windows.push(tokens);
    out.labelMask.push(mask);
    out.documentStarts.push(starts);
    [tokens, mask, starts, used] = [new Int32Array(size), new Uint8Array(size), new Uint8Array(size), 0];
  };
  samples.forEach((s, i) => {
    if (s.tokens.length > size) {
      throw new PersonaError("E_BAD_INPUT", `${names(i)} is ${s.tokens.length} tokens long; a training window holds ${size} (the model's context is the limit: shorten the sample or raise --context)`);
    }
    if (s.promptLength >= s.tokens.length) throw new PersonaError("E_BAD_INPUT", `${names(i)} has no reply tokens to train on`);
    if (used + s.tokens.length > size) flush();
    tokens.set(s.tokens, used);
    mask.fill(1, used + s.promptLength, used + s.tokens.length);
    starts[used] = 1;
    used += s.tokens.length;
    out.scoredTokens += s.tokens.length - s.promptLength;
  });
  flush();
  return out;
}

/**
 * Each `mean: "data"` ablation's kept means: the base model's mean projection on its unit vector
 * at its layer over the training samples' last prompt tokens (`lastPromptMean`) and over all
 * their other tokens, prompt and reply (`mean`), measured once before training, without steering.
 * The ablation then removes the variance along v̂ and keeps where the base model sits on
 * average. Two means because they differ: on the demo model the last prompt token sits far on the
 * trait's negative side of a prompt_last direction (−15 to −37 at layers 5-8) while the other
 * tokens sit near 0, so one mean over all tokens would still push the last prompt token.
 */
export async function withTrainingMeans(model: Model, samples: readonly EncodedSample[], specs: readonly SteeringSpec[]): Promise<SteeringSpec[]> {
  const wanted = specs.filter((s) => s.mean === "data");
  if (wanted.length === 0) return [...specs];
  const probes = model.probes(wanted.map((s) => ({ layer: s.layer, vector: s.vector })));
  const [rest, last] = [new Float64Array(wanted.length), new Float64Array(wanted.length)];
  let tokens = 0;
  await model.project(samples, probes, {
    onSample: (_, p) => {
      for (let k = 0; k < rest.length; k++) {
        rest[k]! += p.promptAvg[k]! * p.nPromptTokens + p.responseAvg[k]! * p.nResponseTokens - p.promptLast[k]!;
        last[k]! += p.promptLast[k]!;
      }
      tokens += p.nPromptTokens + p.nResponseTokens - 1;
    },
  });
  let k = 0;
  return specs.map((s) => {
    if (s.mean !== "data") return s;
    const [mean, lastPromptMean] = [rest[k]! / tokens, last[k]! / samples.length];
    k++;
    return { ...s, mean, lastPromptMean };
  });
}

/** A dataset file's samples; any broken record stops here, naming its line, before training starts. */
export async function loadSamples(file: string): Promise<{ samples: TrainingSample[]; lines: number[] }> {
  const samples: TrainingSample[] = [];
  const lines: number[] = [];
  for await (const r of readDataset(file)) {
    if (r.error !== undefined || !r.sample) throw new PersonaError("E_BAD_FORMAT", `${file}:${r.line}: ${r.error ?? "unreadable record"}`);
    samples.push(r.sample);
    lines.push(r.line);
  }
  if (samples.length === 0) throw new PersonaError("E_BAD_INPUT", `${file} has no samples`);
  return { samples, lines };
}

export interface FinetuneOptions {
  /** The model to train: all-F32, llama architecture; for full training (no `lora`) loaded with `noMmap: true`, and changed in place. */
  model: Model;
  /** Train a LoRA adapter (written to `out` as a GGUF LoRA) instead of every weight. */
  lora?: LoraOptions;
  data: string;
  /** A separate validation file, or the share of `data` (its last samples) held out. */
  val?: string;
  valSplit?: number;
  /** A full GGUF with the model's metadata, or the adapter with `lora`. */
  out: string;
  steering?: readonly SteeringSpec[];
  epochs?: number;
  learningRate?: number;
  /** Windows per optimiser step. */
  batch?: number;
  /** Tokens per window; defaults to the model's training context. */
  contextLength?: number;
  seed?: number;
  /**
   * Where training checkpoints go (default `<out>.ckpt`) and how often (every 50 steps by default,
   * and on cancel); deleted once `out` is written.
   */
  checkpoint?: string;
  checkpointEvery?: number;
  /** Continue from the checkpoint of an interrupted run with the same data and settings (when there is one). */
  resume?: boolean;
  onProgress?: (p: TrainProgress) => void;
  signal?: AbortSignal;
}

export interface FinetuneResult {
  out: string;
  train_loss: number[];
  val_loss: number[];
  /** Token positions processed (windows × window length, over all epochs). */
  tokens: number;
  seconds: number;
  /** The step a checkpoint was resumed from, when it was. */
  resumedFromStep?: number;
  /** The kept means of each `mean: "data"` ablation, in the steering's order. */
  ablationMeans?: { layer: number; mean: number; lastPromptMean: number }[];
}

export async function finetune(o: FinetuneOptions): Promise<FinetuneResult> {
  const { model } = o;
  const nCtx = model.info.nCtxTrain;
  if (o.contextLength !== undefined && (!Number.isInteger(o.contextLength) || o.contextLength < 2 || o.contextLength > nCtx)) {
    throw new PersonaError("E_BAD_INPUT", `context length must be an integer in 2..${nCtx} (the model's training context), got ${o.contextLength}`);
  }
  if (o.val !== undefined && o.valSplit !== undefined) throw new PersonaError("E_BAD_INPUT", "give a validation file or a validation split, not both");
  if (o.valSplit !== undefined && !(o.valSplit > 0 && o.valSplit < 1)) throw new PersonaError("E_BAD_INPUT", `validation split must be in (0, 1), got ${o.valSplit}`);
  // Validate the steering before any long work (the trainer validates it again). A mean still to
  // be measured stands in as a non-zero number, which only an ablation accepts.
  checkTrainSteeringCount(o.steering?.length ?? 0);
  model.steering((o.steering ?? []).map((s) => (s.mean === "data" ? { ...s, mean: 1 } : s)));

  const data = await loadSamples(o.data);
  let train = data.samples.map((s, i) => ({ s, name: `${o.data}:${data.lines[i]}` }));
  let val: typeof train = [];
  if (o.val !== undefined) {
    const v = await loadSamples(o.val);
    val = v.samples.map((s, i) => ({ s, name: `${o.val}:${v.lines[i]}` }));
  } else if (o.valSplit !== undefined) {
    const k = Math.max(1, Math.round(train.length * o.valSplit));
    if (k >= train.length) throw new PersonaError("E_BAD_INPUT", `a validation split of ${o.valSplit} leaves no training sample out of ${train.length}`);
    val = train.slice(train.length - k);
    train = train.slice(0, train.length - k);
  }
  const encode = async (items: typeof train) => {
    const out: EncodedSample[] = [];
    for (const { s } of items) out.push(await encodeSample(model, s));
    return out;
  };
  const [te, ve] = [await encode(train), await encode(val)];
  // By default a window is just long enough for the longest sample (at least 256 tokens, to pack
  // short ones), within the model's training context; a longer sample is refused by the packer.
  const longest = Math.max(...[...te, ...ve].map((e) => e.tokens.length));
  const W = o.contextLength ?? Math.min(nCtx, Math.max(256, longest - 1));
  const pack = (encoded: EncodedSample[], items: typeof train) => packSamples(encoded, W, model.info.eos, (i) => `sample ${items[i]!.name}`);
  const t = pack(te, train);
  const v = pack(ve, val);
  const steering = await withTrainingMeans(model, te, o.steering ?? []);
  const checkpoint = o.checkpoint ?? `${o.out}.ckpt`;
  const r = await model.train({
    windows: [...t.windows, ...v.windows],
    labelMask: [...t.labelMask, ...v.labelMask],
    documentStarts: [...t.documentStarts, ...v.documentStarts],
    valWindows: v.windows.length,
    contextLength: W,
    epochs: o.epochs ?? 1,
    learningRate: o.learningRate ?? 1e-4,
    batchWindows: Math.min(o.batch ?? 1, t.windows.length),
    seed: o.seed ?? 0,
    checkpoint: { path: checkpoint, everySteps: o.checkpointEvery ?? 50, resume: o.resume ?? false },
    ...(steering.length ? { steering } : {}),
    ...(o.lora ? { lora: o.lora } : {}),
    ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  if (r.lora) await saveLora(o.out, model.info.architecture, r.lora);
  else await model.save(o.out);
  await unlink(checkpoint).catch(() => undefined);
  const result: FinetuneResult = { out: o.out, train_loss: r.losses, val_loss: r.valLosses ?? [], tokens: r.tokens, seconds: r.seconds };
  if (r.resumedFromStep !== undefined) result.resumedFromStep = r.resumedFromStep;
  const kept = steering.filter((_, i) => o.steering![i]!.mean === "data");
  if (kept.length) result.ablationMeans = kept.map((s) => ({ layer: s.layer, mean: s.mean as number, lastPromptMean: s.lastPromptMean! }));
  return result;
}
