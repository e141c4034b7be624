/**
 * Builds the demo model from nothing but a seed: generate the persona corpus, train a byte-level
 * BPE on it, write a llama-architecture GGUF with freshly initialised weights and that tokenizer,
 * then train it through the engine (our ggml training graph, AdamW). `npm run demo:train` runs
 * this and prints the loss curve; the result is committed as models/persona-demo.gguf.
 */
import { copyFile, mkdir, rm } from "node:fs/promises";
import path from "node:path";
import type { Engine } from "../engine/Engine.js";
import { CHATML_TEMPLATE, TokenType, type ByteBpeTokenizerSpec } from "../engine/gguf/tokenizer-meta.js";
import { writeSyntheticModel, type SyntheticModelConfig } from "../engine/gguf/synthetic.js";
import type { TrainProgress, TrainResult } from "../engine/train/options.js";
import { trainByteLevelBpe } from "./bpe.js";
import { generateCorpus, renderTrainingText } from "./corpus.js";

export const SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] as const;

export interface DemoBuildConfig {
  seed: number;
  conversations: number;
  vocabSize: number;
  model: Pick<SyntheticModelConfig, "nLayer" | "nEmbd" | "nHead" | "nHeadKv" | "nFf">;
  /** Tokens per training window (also the model's context length). */
  window: number;
  /** Windows per optimiser step. */
  batchWindows: number;
  /** Peak learning rate of each epoch; each epoch decays (cosine) to the next one's peak. */
  learningRates: number[];
  /** AdamW beta2; 0.95 rather than 0.999 keeps small-batch steps from blowing up late in training. */
  beta2: number;
  warmupSteps: number;
  weightDecay: number;
  /** std of the token embeddings, which stay a fixed random code (trained embeddings bring nothing at this size). */
  embeddingStd: number;
}

/** The configuration the committed demo model was built with. */
export const DEMO_BUILD: DemoBuildConfig = {
  seed: 1,
  conversations: 20_000,
  // The merges run out at ~2,900 tokens: every word of the corpus becomes one token, so the model
  // never has to learn spelling (1,024 tokens left it inventing words).
  vocabSize: 4096,
  // Eight blocks, so that the persona the system prompt sets is a state the model carries at mid
  // depth (it reaches the last prompt token by block 3–5) and steering there has blocks left to
  // turn it into a coherent reply (four blocks read the prompt only in the last two: steering
  // flipped the style or broke the grammar). 8 × 128 trains at about the 4 × 192 model's speed.
  model: { nLayer: 8, nEmbd: 128, nHead: 4, nHeadKv: 4, nFf: 384 },
  window: 256,
  batchWindows: 4,
  // 3e-3 decaying to 1e-3, then 1e-3 to 2e-4 (a 2e-3 peak reached the same loss but a weaker
  // hallucinating persona in the 4-layer model).
  learningRates: [3e-3, 1e-3],
  beta2: 0.95,
  warmupSteps: 150,
  weightDecay: 0.01,
  embeddingStd: 1,
};

export function demoTokenizer(texts: Iterable<string>, vocabSize: number): ByteBpeTokenizerSpec {
  const { tokens, merges } = trainByteLevelBpe(texts, { vocabSize, specialTokens: [...SPECIAL_TOKENS] });
  const id = (t: string) => tokens.indexOf(t);
  return {
    tokens,
    merges,
    tokenTypes: tokens.map((t) => ((SPECIAL_TOKENS as readonly string[]).includes(t) ? TokenType.CONTROL : TokenType.NORMAL)),
    bos: id("<|endoftext|>"),
    eos: id("<|im_end|>"),
    eot: id("<|im_end|>"),
    pad: id("<|endoftext|>"),
    pre: "gpt-2", // llama.cpp's "gpt-2" pre-tokenizer uses the same split regex as our BPE trainer
    chatTemplate: CHATML_TEMPLATE,
    // BOS opens every conversation, in training (where it marks document starts) and inference.
    addBos: true,
  };
}

/**
 * Packs whole conversations into windows of `window + 1` tokens. A window always starts at a
 * conversation's beginning, so the model never learns a reply without the system prompt that
 * shaped it; the last conversation of a window may be cut and then starts the next window.
 * Training restarts positions and attention at each conversation's BOS (`documentStart`).
 */
export function packWindows(conversations: readonly Int32Array[], window: number, pad: number): Int32Array[] {
  const size = window + 1;
  const out: Int32Array[] = [];
  let i = 0;
  while (i < conversations.length) {
    const w = new Int32Array(size).fill(pad);
    let fill = 0;
    let next = i;
    while (next < conversations.length && fill < size) {
      const c = conversations[next]!;
      const take = Math.min(c.length, size - fill);
      w.set(c.subarray(0, take), fill);
      fill += take;
      if (take < c.length) break; // cut: it starts the next window
      next++;
    }
    out.push(w);
    i = next === i ? i + 1 : next; // a conversation longer than a window is only seen truncated
  }
  return out;
}

export interface BuildDemoOptions {
  engine: Engine;
  out: string;
  config?: DemoBuildConfig;
  onLog?: (line: string) => void;
  onProgress?: (p: TrainProgress) => void;
  /**
   * Continue a build whose first `fromEpoch` epochs are already saved in `out` (each epoch is an
   * independent optimiser run, so this equals building from scratch). Defaults to 0.
   */
  fromEpoch?: number;
}

export interface DemoBuildResult {
  /** Train and validation loss after each epoch. */
  losses: number[];
  valLosses: number[];
  tokens: number;
  seconds: number;
  windows: number;
  path: string;
}

/**
 * Trains epoch by epoch, saving after each: an epoch whose validation loss gets worse (a
 * divergence) stops the build and the previous epoch's weights are kept.
 */
export async function buildDemoModel(opts: BuildDemoOptions): Promise<DemoBuildResult> {
  const cfg = opts.config ?? DEMO_BUILD;
  const log = opts.onLog ?? (() => undefined);
  const chats = [...generateCorpus({ seed: cfg.seed, nConversations: cfg.conversations })].filter((c) => c.split === "train");
  const texts = chats.map(renderTrainingText);
  log(`corpus: ${texts.length} conversations, ${texts.reduce((a, t) => a + t.length, 0)} characters`);

  const tokenizer = demoTokenizer(texts, cfg.vocabSize);
  log(`tokenizer: ${tokenizer.tokens.length} tokens, ${tokenizer.merges.length} merges`);

  await mkdir(path.dirname(opts.out), { recursive: true });
  const fromEpoch = opts.fromEpoch ?? 0;
  const init = fromEpoch > 0 ? `${opts.out}.resume.gguf` : `${opts.out}.init.gguf`;
  if (fromEpoch > 0) await copyFile(opts.out, init);
  else await writeSyntheticModel(init, {
    arch: "llama",
    ...cfg.model,
    contextLength: cfg.window,
    seed: cfg.seed,
    tokenizer,
    name: "persona-demo",
    init: { std: 0.02, embeddingStd: cfg.embeddingStd },
  });
  const model = await opts.engine.loadModel(init, { noMmap: true });
  try {
    const encoded: Int32Array[] = [];
    for (const t of texts) encoded.push(await model.tokenize(t, { addSpecial: true, parseSpecial: true }));
    const nTokens = encoded.reduce((a, e) => a + e.length, 0);
    const windows = packWindows(encoded, cfg.window, tokenizer.pad!);
    log(`training data: ${nTokens} tokens (${(nTokens / encoded.length).toFixed(1)} per conversation) in ${windows.length} windows of ${cfg.window}`);
    const out: DemoBuildResult = { losses: [], valLosses: [], tokens: 0, seconds: 0, windows: windows.length, path: opts.out };
    for (const [e, lr] of cfg.learningRates.entries()) {
      if (e < fromEpoch) continue;
      const r: TrainResult = await model.train({
        windows,
        contextLength: cfg.window,
        batchWindows: cfg.batchWindows,
        documentStart: tokenizer.bos!,
        trainable: (name) => name !== "token_embd.weight",
        epochs: 1,
        learningRate: lr,
        minLearningRate: cfg.learningRates[e + 1] ?? lr / 5,
        warmupSteps: cfg.warmupSteps,
        beta2: cfg.beta2,
        weightDecay: cfg.weightDecay,
        valFraction: 0.02,
        seed: cfg.seed + e,
        onProgress: opts.onProgress && ((p) => opts.onProgress!({ ...p, epoch: e + 1, epochs: cfg.learningRates.length })),
      });
      const val = r.valLosses?.[0] ?? Number.NaN;
      const previous = out.valLosses.at(-1);
      out.tokens += r.tokens;
      out.seconds += r.seconds;
      if (previous !== undefined && !(val <= previous * 1.02)) {
        log(`epoch ${e + 1}: validation loss ${val.toFixed(4)} after ${previous.toFixed(4)}: keeping the previous epoch's weights`);
        break;
      }
      out.losses.push(r.losses[0]!);
      out.valLosses.push(val);
      await model.save(opts.out);
    }
    return out;
  } finally {
    await model.dispose();
    await rm(init, { force: true });
  }
}
