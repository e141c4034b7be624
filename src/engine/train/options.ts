/**
 * Training inputs and outputs, their validation and the learning-rate schedule. Pure code, shared
 * by the main thread (which packs the request) and the engine worker (which validates it again
 * before llama.cpp sees it: a GGML_ASSERT inside ggml would kill the process).
 */
import { PersonaError } from "../../errors.js";
import type { SteeringSpec } from "../steering.js";
import type { GraphSteer } from "./graph.js";

export interface TrainProgress {
  /** 1-based epoch. */
  epoch: number;
  epochs: number;
  /** Optimiser steps done so far (batchWindows windows each), over all epochs. */
  step: number;
  steps: number;
  /** Mean training loss (nats per token) of this epoch so far. */
  loss: number;
  /** Learning rate of the last step. */
  learningRate: number;
  /** Training throughput since the start. */
  tokensPerSecond: number;
  /** True on the one event that closes an epoch. */
  epochDone: boolean;
  /** Mean validation loss, on the event that closes an epoch when there is a validation split. */
  valLoss?: number;
}

/** LoRA target shorthands (the reference's q,k,v,o,gate,up,down) and the weights they adapt. */
export const LORA_TARGETS = { q: "attn_q", k: "attn_k", v: "attn_v", o: "attn_output", gate: "ffn_gate", up: "ffn_up", down: "ffn_down" } as const;
export type LoraTarget = keyof typeof LORA_TARGETS;

export interface LoraOptions {
  rank: number;
  /** Defaults to 2 · rank. */
  alpha?: number;
  /** Scale alpha/√rank (rsLoRA) instead of alpha/rank. Defaults to false. */
  rslora?: boolean;
  /** Defaults to all seven. */
  targets?: readonly LoraTarget[];
}

/** A trained adapter: W + scale·B·A for each adapted weight (A [nIn, rank], B [rank, nOut] in ggml order). */
export interface TrainedLora {
  rank: number;
  scale: number;
  tensors: { name: string; a: Float32Array; b: Float32Array; nIn: number; nOut: number }[];
}

export interface TrainOptions {
  /**
   * Training windows of exactly `contextLength + 1` tokens each: the model reads the first
   * `contextLength` and is scored on predicting the last `contextLength` (next-token labels).
   * Give either `windows` or `tokens`.
   */
  windows?: readonly Int32Array[];
  /** One token stream, cut into windows of `contextLength + 1` tokens that start every `stride` tokens. */
  tokens?: Int32Array;
  /** Distance between window starts in `tokens`. Defaults to `contextLength` (no overlap). */
  stride?: number;
  /** Positions per window; at most the model's training context. */
  contextLength: number;
  epochs: number;
  /** Peak AdamW learning rate. */
  learningRate: number;
  /** Where the cosine decay ends, on the last step. Defaults to learningRate / 10. */
  minLearningRate?: number;
  /** Steps of linear warm-up from learningRate / warmupSteps up to learningRate. Defaults to 0. */
  warmupSteps?: number;
  /** AdamW decoupled weight decay, in [0, 1]. Defaults to 0. */
  weightDecay?: number;
  /** Defaults to 0.9. */
  beta1?: number;
  /** Defaults to 0.999. */
  beta2?: number;
  /** Defaults to 1e-8. */
  eps?: number;
  /** Share of the windows (the last ones) held out for a validation loss after each epoch. Defaults to 0. */
  valFraction?: number;
  /** Seeds the per-epoch shuffle of the training windows. Defaults to 0. */
  seed?: number;
  /** "adamw" (default) or plain "sgd" (w ← w·(1 − lr·wd) − lr·g). */
  optimizer?: "adamw" | "sgd";
  /** Windows per optimiser step (one gradient over all of them). Defaults to 1. */
  batchWindows?: number;
  /**
   * A token that opens every document (e.g. BOS): where it occurs inside a window, positions
   * restart at 0 and attention does not reach back across it, so packed documents train as if
   * each were alone. Defaults to none (a window is one document).
   */
  documentStart?: number;
  /**
   * Which tokens are scored as next-token targets (1) and which are context only (0), e.g. 1 on
   * an assistant reply and 0 on its prompt (response-only loss): one mask per window (same length)
   * with `windows`, or one aligned with `tokens`. Every training window needs a scored target.
   * Defaults to every token scored.
   */
  labelMask?: Uint8Array | readonly Uint8Array[];
  /**
   * Document starts flagged per token (1 = a document opens here), as `labelMask` is laid out: for
   * packed data whose documents have no token of their own that opens them (no BOS).
   */
  documentStarts?: Uint8Array | readonly Uint8Array[];
  /**
   * Steering applied in every forward pass of training, on every position, as graph ops that the
   * gradient flows through: `add` (preventative steering) and `ablate` (CAFT, optionally keeping a
   * mean projection). Validated like
   * inference steering; positions must be "all".
   */
  steering?: readonly SteeringSpec[];
  /** Exactly this many trailing windows are the validation split (instead of `valFraction`). */
  valWindows?: number;
  /** Which weight tensors train (by GGUF tensor name). Defaults to all of them. */
  trainable?: RegExp | ((name: string) => boolean);
  /**
   * Train a LoRA adapter instead of the weights (which stay as they are): A initialised
   * uniform(±1/√nIn), B zero, as PEFT does. The result carries the adapter.
   */
  lora?: LoraOptions;
  /**
   * Checkpoints: the trained tensors, AdamW state and data position written atomically to `path`
   * every `everySteps` steps (default 50) and when cancelled. With
   * `resume`, a checkpoint found at `path` is continued (it must come from the same data and
   * settings); the result is then the same as an uninterrupted run's with the same thread count.
   * Without `resume`, an existing checkpoint is refused rather than overwritten.
   */
  checkpoint?: { path: string; everySteps?: number; resume?: boolean };
  /** Called after every step, and once more at the end of each epoch. */
  onProgress?: (p: TrainProgress) => void;
  /** Checked between steps; an abort stops training with E_ABORTED and leaves the weights as they are then. */
  signal?: AbortSignal;
}

export interface TrainResult {
  /** Mean training loss of each epoch (nats per token). */
  losses: number[];
  /** Mean validation loss after each epoch, when there is a validation split. */
  valLosses?: number[];
  steps: number;
  /** Tokens trained on (windows × contextLength × epochs). */
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  /** Tensors the optimiser updated, and their parameter count. */
  trainableTensors: string[];
  trainableParams: number;
  /** The adapter, when training a LoRA. */
  lora?: TrainedLora;
  /** The step a checkpoint was resumed from; absent for a run from the start. */
  resumedFromStep?: number;
}

/** What crosses to the worker: window i is `tokens[starts[i] .. starts[i] + contextLength]` (inclusive). */
export interface TrainSpec {
  tokens: Int32Array;
  starts: Int32Array;
  contextLength: number;
  epochs: number;
  learningRate: number;
  minLearningRate: number;
  warmupSteps: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** The last `valCount` windows are the validation split. */
  valCount: number;
  seed: number;
  /** Names of the tensors to train; null = all. */
  trainable: string[] | null;
  optimizer: "adamw" | "sgd";
  batchWindows: number;
  /** -1 = none. */
  documentStart: number;
  /** Aligned with `tokens`: 1 where a token is a scored target; null = all. */
  labelMask: Uint8Array | null;
  /** Aligned with `tokens`: 1 where a document starts; null = none flagged. */
  documentStarts: Uint8Array | null;
  steering: GraphSteer[];
  /** LoRA training: rank, scale and the weight-name suffixes adapted; null = full weights. */
  lora: { rank: number; scale: number; targets: string[] } | null;
  checkpoint: { path: string; everySteps: number; resume: boolean } | null;
}

function bad(msg: string): PersonaError {
  return new PersonaError("E_BAD_INPUT", msg);
}

function int(name: string, v: unknown, min: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) throw bad(`${name} must be an integer ≥ ${min}, got ${String(v)}`);
  return v;
}

function inRange(name: string, v: unknown, lo: number, hi: number, hiOpen: boolean): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < lo || (hiOpen ? v >= hi : v > hi)) {
    throw bad(`${name} must be in [${lo}, ${hi}${hiOpen ? ")" : "]"}, got ${String(v)}`);
  }
  return v;
}

/** One flag per token of the packed stream, from a per-window list or one aligned array. */
function packFlags(name: string, flags: Uint8Array | readonly Uint8Array[] | undefined, o: TrainOptions, nTokens: number, W: number): Uint8Array | null {
  if (flags === undefined) return null;
  if (flags instanceof Uint8Array) {
    if (o.windows) throw bad(`with \`windows\`, ${name} must be one Uint8Array per window`);
    if (flags.length !== nTokens) throw bad(`${name} has ${flags.length} entries for ${nTokens} tokens`);
    return flags;
  }
  if (!o.windows || !Array.isArray(flags)) throw bad(`${name} must be a Uint8Array aligned with \`tokens\``);
  if (flags.length !== o.windows.length) throw bad(`${name} has ${flags.length} masks for ${o.windows.length} windows`);
  const out = new Uint8Array(nTokens);
  flags.forEach((f, i) => {
    if (!(f instanceof Uint8Array) || f.length !== W + 1) throw bad(`${name} ${i} must be a Uint8Array of ${W + 1} entries, as its window`);
    out.set(f, i * (W + 1));
  });
  return out;
}

/**
 * Most steering ops one training graph takes: each adds ~48 graph nodes (`graphSize`), and a graph
 * too large for ggml to allocate aborts the process. 8,192 covers a 256-direction span at 32 layers.
 */
export const MAX_TRAIN_STEERING = 8192;

/** Refuses more training steering ops than `MAX_TRAIN_STEERING`, before any long work. */
export function checkTrainSteeringCount(n: number): void {
  if (n > MAX_TRAIN_STEERING) {
    throw new PersonaError("E_BAD_STEER_ARG", `${n} steering ops during training (a span ablates one per direction and layer); at most ${MAX_TRAIN_STEERING}: use fewer layers or a narrower span`);
  }
}

/** Packs the user's options into a TrainSpec (shapes only; token ids are checked against the model by validateSpec). */
export function packTrainOptions(o: TrainOptions, trainable: string[] | null, steering: GraphSteer[] = []): TrainSpec {
  const W = int("contextLength", o.contextLength, 1);
  let tokens: Int32Array;
  let starts: Int32Array;
  if ((o.windows === undefined) === (o.tokens === undefined)) throw bad("give exactly one of `windows` and `tokens`");
  if (o.windows) {
    if (!Array.isArray(o.windows)) throw bad("windows must be an array of Int32Array");
    tokens = new Int32Array(o.windows.length * (W + 1));
    starts = new Int32Array(o.windows.length);
    o.windows.forEach((w, i) => {
      if (!(w instanceof Int32Array)) throw bad(`window ${i} is not an Int32Array`);
      if (w.length !== W + 1) {
        throw bad(`window ${i} has ${w.length} tokens; each window needs contextLength + 1 = ${W + 1} (inputs plus the next-token label)`);
      }
      tokens.set(w, i * (W + 1));
      starts[i] = i * (W + 1);
    });
  } else {
    if (!(o.tokens instanceof Int32Array)) throw bad("tokens must be an Int32Array");
    const stride = int("stride", o.stride ?? W, 1);
    tokens = o.tokens;
    const n = tokens.length >= W + 1 ? Math.floor((tokens.length - W - 1) / stride) + 1 : 0;
    starts = Int32Array.from({ length: n }, (_, i) => i * stride);
  }
  const valFraction = inRange("valFraction", o.valFraction ?? 0, 0, 1, true);
  const valCount = o.valWindows !== undefined ? int("valWindows", o.valWindows, 0) : valFraction > 0 ? Math.max(1, Math.round(starts.length * valFraction)) : 0;
  const lr = o.learningRate;
  return {
    tokens,
    starts,
    contextLength: W,
    epochs: o.epochs,
    learningRate: lr,
    minLearningRate: o.minLearningRate ?? lr / 10,
    warmupSteps: o.warmupSteps ?? 0,
    weightDecay: o.weightDecay ?? 0,
    beta1: o.beta1 ?? 0.9,
    beta2: o.beta2 ?? 0.999,
    eps: o.eps ?? 1e-8,
    valCount,
    seed: o.seed ?? 0,
    trainable,
    optimizer: o.optimizer ?? "adamw",
    batchWindows: o.batchWindows ?? 1,
    documentStart: o.documentStart ?? -1,
    labelMask: packFlags("labelMask", o.labelMask, o, tokens.length, W),
    documentStarts: packFlags("documentStarts", o.documentStarts, o, tokens.length, W),
    steering,
    lora: o.lora === undefined ? null : packLora(o.lora),
    checkpoint: o.checkpoint === undefined ? null : packCheckpoint(o.checkpoint),
  };
}

function packCheckpoint(c: NonNullable<TrainOptions["checkpoint"]>): NonNullable<TrainSpec["checkpoint"]> {
  if (typeof c !== "object" || c === null || typeof c.path !== "string" || c.path === "") throw bad("checkpoint needs a file path");
  return { path: c.path, everySteps: int("checkpoint everySteps", c.everySteps ?? 50, 1), resume: c.resume === true };
}

function packLora(l: LoraOptions): { rank: number; scale: number; targets: string[] } {
  if (typeof l !== "object" || l === null) throw bad("lora must be an object with a rank");
  const rank = int("lora rank", l.rank, 1);
  const alpha = l.alpha ?? 2 * rank;
  if (typeof alpha !== "number" || !(alpha > 0) || !Number.isFinite(alpha)) throw bad(`lora alpha must be a positive number, got ${String(alpha)}`);
  const targets = [...new Set(l.targets ?? (Object.keys(LORA_TARGETS) as LoraTarget[]))];
  if (targets.length === 0) throw bad("lora targets select no weight");
  for (const t of targets) {
    if (!(t in LORA_TARGETS)) throw bad(`unknown lora target ${String(t)}; use ${Object.keys(LORA_TARGETS).join(", ")}`);
  }
  return { rank, scale: alpha / (l.rslora ? Math.sqrt(rank) : rank), targets: targets.map((t) => LORA_TARGETS[t]) };
}

/** Everything ggml's training graph would assert on, checked against the model first. */
export function validateSpec(s: TrainSpec, model: { nVocab: number; nCtxTrain: number; nEmbd: number; nLayer: number }): void {
  const W = int("contextLength", s.contextLength, 1);
  if (W > model.nCtxTrain) throw bad(`contextLength ${W} exceeds the model's training context ${model.nCtxTrain}`);
  int("epochs", s.epochs, 1);
  int("warmupSteps", s.warmupSteps, 0);
  int("seed", s.seed, -(2 ** 31));
  const B = int("batchWindows", s.batchWindows, 1);
  if (s.optimizer !== "adamw" && s.optimizer !== "sgd") throw bad(`optimizer must be "adamw" or "sgd", got ${String(s.optimizer)}`);
  int("documentStart", s.documentStart, -1);
  if (s.documentStart >= model.nVocab) throw bad(`documentStart ${s.documentStart} is outside the vocabulary (0..${model.nVocab - 1})`);
  if (!(typeof s.learningRate === "number" && s.learningRate > 0 && Number.isFinite(s.learningRate))) {
    throw bad(`learningRate must be a positive number, got ${String(s.learningRate)}`);
  }
  inRange("minLearningRate", s.minLearningRate, 0, s.learningRate, false);
  inRange("weightDecay", s.weightDecay, 0, 1, false);
  inRange("beta1", s.beta1, 0, 1, true);
  inRange("beta2", s.beta2, 0, 1, true);
  inRange("eps", s.eps, 0, 1, false);
  const n = s.starts.length;
  if (n - s.valCount < 1) {
    throw bad(`no training windows: ${n} window(s) of ${W + 1} tokens, ${s.valCount} held out for validation`);
  }
  if (n - s.valCount < B) throw bad(`batchWindows ${B} exceeds the ${n - s.valCount} training window(s)`);
  for (let i = 0; i < n; i++) {
    const a = s.starts[i]!;
    if (a < 0 || a + W + 1 > s.tokens.length) throw bad(`window ${i} runs past the end of the tokens`);
  }
  const nVocab = model.nVocab;
  for (let i = 0; i < s.tokens.length; i++) {
    const t = s.tokens[i]!;
    if (t < 0 || t >= nVocab) throw bad(`token id ${t} at position ${i} is outside the vocabulary (0..${nVocab - 1})`);
  }
  if (s.trainable !== null && s.trainable.length === 0) throw bad("`trainable` selects no tensor");
  for (const f of [s.labelMask, s.documentStarts]) {
    if (f !== null && (!(f instanceof Uint8Array) || f.length !== s.tokens.length)) throw bad("token flags must be aligned with the tokens");
  }
  if (s.labelMask !== null) {
    for (let i = 0; i < n; i++) {
      if (!s.labelMask.subarray(s.starts[i]! + 1, s.starts[i]! + W + 1).includes(1)) throw bad(`window ${i} has no scored token (labelMask)`);
    }
  }
  if (s.lora !== null) {
    int("lora rank", s.lora.rank, 1);
    if (!(s.lora.scale > 0) || !Number.isFinite(s.lora.scale)) throw bad("lora scale must be a positive number");
    const known = new Set<string>(Object.values(LORA_TARGETS));
    if (s.lora.targets.length === 0 || !s.lora.targets.every((t) => known.has(t))) throw bad("bad lora targets");
    if (s.trainable !== null) throw bad("`trainable` selects weights for full training; it does not combine with lora");
  }
  s.steering.forEach((op, i) => {
    if (!Number.isInteger(op.layer) || op.layer < 1 || op.layer > model.nLayer) throw new PersonaError("E_SHAPE", `steering #${i + 1}: layer ${op.layer} is out of range 1..${model.nLayer}`);
    if (!(op.vec instanceof Float32Array) || op.vec.length !== model.nEmbd) {
      throw new PersonaError("E_SHAPE", `steering #${i + 1}: vector has ${op.vec?.length ?? 0} values but the model's n_embd is ${model.nEmbd}`);
    }
    if ((op.kind !== "add" && op.kind !== "ablate") || !Number.isFinite(op.coef)) throw new PersonaError("E_BAD_STEER_ARG", `steering #${i + 1}: bad kind or coefficient`);
    for (const m of [op.mean, op.lastPromptMean]) {
      if (m !== undefined && (op.kind !== "ablate" || !Number.isFinite(m))) throw new PersonaError("E_BAD_STEER_ARG", `steering #${i + 1}: a kept mean must be a finite number on an ablation`);
    }
  });
}

/**
 * Learning rate of 0-based step `step` of `total`: linear warm-up to the peak over `warmupSteps`,
 * then cosine decay to `minLearningRate` at the last step. Always > 0, as ggml's AdamW requires.
 */
export function learningRateAt(s: Pick<TrainSpec, "learningRate" | "minLearningRate" | "warmupSteps">, step: number, total: number): number {
  const { learningRate: peak, minLearningRate: floor, warmupSteps: warm } = s;
  let lr: number;
  if (step < warm) lr = (peak * (step + 1)) / warm;
  else {
    const span = total - warm - 1;
    const progress = span > 0 ? Math.min(1, (step - warm) / span) : 0;
    lr = floor + (peak - floor) * 0.5 * (1 + Math.cos(Math.PI * progress));
  }
  return Math.max(lr, 1e-30);
}

/** mulberry32: uniform [0, 1) numbers from a 32-bit seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Seeded Fisher-Yates shuffle, so a run's window order is reproducible. */
export function shuffled(n: number, seed: number): Int32Array {
  const out = Int32Array.from({ length: n }, (_, i) => i);
  const next = seededRandom(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    const t = out[i]!;
    out[i] = out[j]!;
    out[j] = t;
  }
  return out;
}
