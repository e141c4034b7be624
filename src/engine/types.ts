/** Data types shared by the engine's public API, its worker and the pipelines. */
import type { ResolvedSteering } from "./steering.js";

export interface ChatMessage {
  role: "system" | "user" | "assistant" | (string & {});
  content: string;
}

export interface ModelInfo {
  path: string;
  name: string;
  architecture: string;
  nLayer: number;
  nEmbd: number;
  nHead: number;
  nVocab: number;
  /** Context length the model was trained with. */
  nCtxTrain: number;
  nParams: number;
  fileSize: number;
  /** `tokenizer.chat_template`, or null when the file has none. */
  chatTemplate: string | null;
  bos: number;
  eos: number;
  eot: number;
  addBos: boolean;
  bosText: string;
  eosText: string;
  /** LoRA adapters applied to every context of the model, in load order. */
  adapters: readonly { path: string; scale: number }[];
}

/**
 * Prompt text for a decode-loop request, tokenized by the engine worker as the request reaches it:
 * one round trip to the worker instead of two (tokenize, then submit), each of which waits for the
 * decode step in progress; a server's slots stand empty for those waits between requests.
 */
export interface PromptText {
  text: string;
  /** Add BOS (and what else the vocabulary adds), as `Model.tokenize`'s option. */
  addSpecial: boolean;
  /** Parse special tokens written in the text (a chat template's markers). */
  parseSpecial: boolean;
}

export interface PrefixOptions {
  /**
   * Requests whose prompts start alike (n rollouts of one question) decode the common prefix once
   * and share its KV cells. Defaults to true; false decodes every prompt whole (for comparisons).
   */
  sharePrefixes?: boolean;
}

export interface SamplingOptions {
  /** 0 = greedy. Defaults to 1. */
  temperature?: number;
  /** Defaults to 1 (off). */
  topP?: number;
  /** Defaults to 0 (off). */
  topK?: number;
  /** Defaults to 0 (off). */
  minP?: number;
  /** Base seed; request i samples with its own stream seeded from (seed, i) unless it has a seed. Defaults to 0. */
  seed?: number;
  /** Defaults to 256. */
  maxTokens?: number;
  /** End-of-generation tokens are suppressed until this many tokens exist. Defaults to 0. */
  minTokens?: number;
}

export interface GenerateRequest {
  /** Prompt token ids (already templated). */
  prompt: Int32Array;
  /** Overrides the shared seed for this request, so a re-run reproduces it whatever the batch. */
  seed?: number;
  /** Overrides the shared steering for this request. */
  steering?: ResolvedSteering;
}

export interface GenerateOptions extends SamplingOptions, PrefixOptions {
  steering?: ResolvedSteering;
  /** Also capture the residual reductions of each request (prompt and generated tokens). */
  capture?: boolean;
  /**
   * Capture only these layers (activations then hold `layers.length` rows, see
   * `SampleActivations.layers`); each hooked layer costs a graph split. Defaults to all.
   */
  captureLayers?: readonly number[];
  /**
   * Project residuals onto unit vectors while generating (from `model.probes(...)`): each result
   * carries `projections` — the last prompt token's (before the first sampled token), the mean
   * over generated tokens and, when the probes ask, one value per generated token.
   */
  probes?: import("./capture.js").ResolvedProbes;
  /** Sequences decoded together. Defaults to min(requests, 16). */
  parallel?: number;
  /** Exact numerics (F32 KV cache, no flash attention). Defaults to false for generation. */
  exact?: boolean;
}

export interface GenerationResult {
  index: number;
  tokens: Int32Array;
  text: string;
  finishReason: "stop" | "length";
  activations?: import("./capture.js").SampleActivations;
  projections?: import("./capture.js").SampleProjections;
}

export interface CaptureSample {
  /** Prompt tokens followed by response tokens. */
  tokens: Int32Array;
  /** Number of leading prompt tokens (the prompt/response boundary). */
  promptLength: number;
  steering?: ResolvedSteering;
}

export interface CaptureOptions extends PrefixOptions {
  steering?: ResolvedSteering;
  /** Tokens per decode. Defaults to 512. */
  batchTokens?: number;
  /** Exact numerics (F32 KV cache, no flash attention). Defaults to true for capture. */
  exact?: boolean;
  /** Capture only these layers (activations hold `layers.length` rows). Defaults to all. */
  captureLayers?: readonly number[];
}

export interface TokenLogprob {
  token: number;
  logprob: number;
}

export interface LogprobRequest {
  /** Context tokens. */
  prompt: Int32Array;
  /** Scores log P(continuation | prompt), token by token, when given. */
  continuation?: Int32Array;
  /** Also return the top-k next tokens after the prompt. Defaults to 0. */
  topK?: number;
  steering?: ResolvedSteering;
}

export interface LogprobResult {
  /** log P of each continuation token. */
  continuation: Float64Array;
  /** Sum of `continuation`. */
  total: number;
  top: TokenLogprob[];
}
