/**
 * A loaded model, as seen from the main thread: metadata, tokenizer, chat template, and the three
 * things the method needs — batched generation, residual capture, log-probabilities — each with
 * optional steering. Every call is queued to the engine worker.
 */
import { PersonaError } from "../errors.js";
import type { Job, JobResult, SamplerSettings } from "./batching.js";
import { type ProbeSpec, type ResolvedProbes, resolveProbes, type SampleActivations, type SampleProjections } from "./capture.js";
import { renderJinjaChat, validateMessages } from "./chat.js";
import { readGguf } from "./gguf/reader.js";
import { maxOf } from "../util/extent.js";
import { checkTrainSteeringCount, packTrainOptions, type TrainOptions, type TrainResult } from "./train/options.js";
import type { PathScore } from "./tree.js";
import { ALL_POSITIONS, keptMeans, NO_STEERING, type ResolvedSteering, type SteeringSpec, resolveSteering } from "./steering.js";
import type {
  CaptureOptions,
  CaptureSample,
  ChatMessage,
  GenerateOptions,
  GenerateRequest,
  GenerationResult,
  LogprobRequest,
  LogprobResult,
  ModelInfo,
  PrefixOptions,
  PromptText,
} from "./types.js";
import { DecodeLoop, type LoopOptions, type LoopRequest } from "./DecodeLoop.js";
import type { ContextShape, RunTotals } from "./worker/core.js";
import type { WorkerHost } from "./worker/host.js";
import type { WorkerEvent } from "./worker/protocol.js";

export interface GenerateCallbacks {
  /** Called as each request finishes (in completion order). */
  onResult?(result: GenerationResult): void;
  /** Called for every sampled token (streaming); `piece` is its bytes, which may split a UTF-8 character. */
  onToken?(index: number, token: number, piece: Uint8Array): void;
  signal?: AbortSignal;
}

export interface CaptureCallbacks {
  /** Called as each sample finishes; with it, `capture` keeps nothing and resolves to []. */
  onSample?(index: number, activations: SampleActivations): void;
  signal?: AbortSignal;
}

export interface ProjectOptions extends PrefixOptions {
  steering?: ResolvedSteering;
  /** Tokens per decode. Defaults to 512. */
  batchTokens?: number;
  /** Exact numerics (F32 KV cache, no flash attention). Defaults to true. */
  exact?: boolean;
  /** Called as each sample finishes; with it, `project` keeps nothing and resolves to []. */
  onSample?(index: number, projections: SampleProjections): void;
  signal?: AbortSignal;
}

/** Mixes a base seed and a request index into an independent 32-bit seed. */
export function requestSeed(seed: number, index: number): number {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca77)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  return (h ^ (h >>> 15)) >>> 0;
}

/** Most tokens per forward pass a caller may ask for. */
export const MAX_BATCH_TOKENS = 65536;

function checkPositiveInt(name: string, v: number, min = 1): void {
  if (!Number.isInteger(v) || v < min) throw new PersonaError("E_BAD_INPUT", `${name} must be an integer ≥ ${min}, got ${v}`);
}

/** Most alternatives per token a loop request may ask log-probabilities for. */
export const MAX_TOP_LOGPROBS = 20;

/** llama.cpp's LLAMA_MAX_SEQ. */
const MAX_SLOTS = 256;

export class Model implements AsyncDisposable {
  readonly info: ModelInfo;
  private disposed = false;
  private readonly loops = new Set<DecodeLoop>();

  /** @internal */
  constructor(
    private readonly host: WorkerHost,
    private readonly id: number,
    info: ModelInfo,
    private readonly onDispose: (m: Model) => void,
  ) {
    this.info = info;
  }

  private checkCaptureLayers(layers: readonly number[] | undefined): void {
    for (const l of layers ?? []) {
      if (!Number.isInteger(l) || l < 0 || l > this.info.nLayer) {
        throw new PersonaError("E_SHAPE", `capture layer ${l} is outside 0..${this.info.nLayer}`);
      }
    }
  }

  /**
   * Validates probes (layer 0..n_layer, an n_embd vector each) into the engine's form, normalised
   * to unit length. `perToken` also keeps one projection per response token.
   */
  probes(specs: readonly ProbeSpec[], opts: { perToken?: boolean } = {}): ResolvedProbes {
    return resolveProbes(specs, this.info, opts.perToken ?? false);
  }

  /** Validates steering specs against this model (width, layer range) into the engine's form. */
  steering(specs: readonly SteeringSpec[]): ResolvedSteering {
    return resolveSteering(specs, this.info);
  }

  tokenize(text: string, opts: { addSpecial?: boolean; parseSpecial?: boolean } = {}): Promise<Int32Array> {
    this.ensureAlive();
    if (typeof text !== "string") throw new PersonaError("E_BAD_INPUT", "text must be a string");
    return this.host.call({
      op: "tokenize",
      modelId: this.id,
      text,
      addSpecial: opts.addSpecial ?? this.info.addBos,
      parseSpecial: opts.parseSpecial ?? false,
    });
  }

  detokenize(tokens: Int32Array | readonly number[], opts: { renderSpecial?: boolean } = {}): Promise<string> {
    this.ensureAlive();
    return this.host.call({
      op: "detokenize",
      modelId: this.id,
      tokens: Int32Array.from(tokens),
      renderSpecial: opts.renderSpecial ?? false,
    });
  }

  /** Renders messages with the model's chat template (jinja; llama.cpp's built-ins as fallback). */
  async renderChat(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): Promise<string> {
    this.ensureAlive();
    validateMessages(messages);
    const template = this.info.chatTemplate;
    if (!template) {
      throw new PersonaError("E_BAD_MODEL", `${this.info.name} has no chat template; pass raw text instead (--raw)`);
    }
    const addGenerationPrompt = opts.addGenerationPrompt ?? true;
    try {
      return await renderJinjaChat(template, messages, {
        addGenerationPrompt,
        bosToken: this.info.bosText,
        eosToken: this.info.eosText,
      });
    } catch (e) {
      if (e instanceof PersonaError) throw e; // a runaway template, not one jinja cannot parse
      return this.host.call({ op: "builtinTemplate", modelId: this.id, messages: [...messages], addAssistant: addGenerationPrompt });
    }
  }

  /** The templated prompt as text and how to tokenize it: BOS is added only when the template did not already write it. */
  async chatPrompt(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): Promise<PromptText> {
    const text = await this.renderChat(messages, opts);
    const templateHasBos = this.info.bosText !== "" && text.startsWith(this.info.bosText);
    return { text, addSpecial: this.info.addBos && !templateHasBos, parseSpecial: true };
  }

  /** Templated prompt tokens (see `chatPrompt`). */
  async encodeChat(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): Promise<Int32Array> {
    const prompt = await this.chatPrompt(messages, opts);
    return this.tokenize(prompt.text, prompt);
  }

  /**
   * A conversation whose last message is the assistant's reply, as capture input: the prompt is
   * the templated conversation before it (with the generation prompt), the response is the
   * reply's raw text; the boundary is the prompt's token count, as in the reference.
   */
  async encodeConversation(messages: readonly ChatMessage[]): Promise<CaptureSample> {
    validateMessages(messages);
    const last = messages[messages.length - 1]!;
    if (last.role !== "assistant" || messages.length < 2) {
      throw new PersonaError("E_BAD_INPUT", "the last message must be the assistant's reply, after at least one other message");
    }
    const prompt = await this.encodeChat(messages.slice(0, -1), { addGenerationPrompt: true });
    const response = await this.tokenize(last.content, { addSpecial: false, parseSpecial: false });
    return joinSample(prompt, response);
  }

  /** Raw (untemplated) prompt/response pair; the boundary is the token count of the prompt alone. */
  async encodePair(prompt: string, response: string): Promise<CaptureSample> {
    const p = await this.tokenize(prompt, { parseSpecial: true });
    const r = await this.tokenize(response, { addSpecial: false, parseSpecial: true });
    return joinSample(p, r);
  }

  async generate(
    requests: readonly GenerateRequest[],
    opts: GenerateOptions & GenerateCallbacks = {},
  ): Promise<GenerationResult[]> {
    this.ensureAlive();
    const sampling = samplerSettings(opts);
    this.checkCaptureLayers(opts.captureLayers);
    const shared = opts.steering ?? NO_STEERING;
    const jobs: Job[] = requests.map((r, i) => {
      if (!(r.prompt instanceof Int32Array)) throw new PersonaError("E_BAD_INPUT", `request ${i}: prompt must be an Int32Array of token ids`);
      return {
        prompt: r.prompt,
        sampling: { ...sampling, seed: r.seed ?? requestSeed(sampling.seed, i) },
        ops: [...(r.steering ?? shared)],
        capture: opts.capture ?? false,
        captureLayers: opts.captureLayers,
        probes: opts.probes,
      };
    });
    if (jobs.length === 0) return [];
    const parallel = opts.parallel ?? Math.min(jobs.length, 16);
    checkPositiveInt("parallel", parallel);
    const longest = maxOf(jobs, (j) => j.prompt.length);
    const shape: ContextShape = {
      nSeqMax: parallel,
      nCtxPerSeq: longest + sampling.maxTokens + 1,
      nBatch: Math.max(parallel, 512),
      exact: opts.exact ?? false,
    };
    const results: GenerationResult[] = new Array(jobs.length);
    await this.run(jobs, shape, opts, Boolean(opts.onToken), (e) => {
      if (e.type === "token") return opts.onToken?.(e.index, e.token, e.piece);
      if (e.type !== "result") return;
      const g = generationResult(e.result);
      results[g.index] = g;
      opts.onResult?.(g);
    });
    return results;
  }

  /**
   * Each sample's projections (as `project`) and a reply sampled to its prompt with the same
   * probes (as `generate`, seeded by the sample's `seed` or from (opts.seed, index)), in one engine
   * call: a sample and its reply share the prompt's KV cells, so the prompt goes through the model
   * once. Screening compares the two.
   */
  async projectAndReply(
    samples: readonly (CaptureSample & { seed?: number })[],
    probes: ResolvedProbes,
    opts: Omit<GenerateOptions, "probes" | "capture" | "captureLayers"> & { signal?: AbortSignal } = {},
  ): Promise<{ projections: SampleProjections; reply: GenerationResult }[]> {
    this.ensureAlive();
    const sampling = samplerSettings(opts);
    const forced = this.forcedJobs(samples, opts.steering, { capture: false, probes });
    // A sample, then its reply: the reply is admitted with its sample and forks its prompt.
    const jobs = forced.flatMap((f, i): Job[] => [
      f,
      { prompt: f.prompt, sampling: { ...sampling, seed: samples[i]!.seed ?? requestSeed(sampling.seed, i) }, ops: f.ops, capture: false, probes },
    ]);
    if (jobs.length === 0) return [];
    const scoring = this.scoringShape(forced, undefined, opts.exact ?? true);
    const parallel = opts.parallel ?? Math.min(jobs.length, 16);
    checkPositiveInt("parallel", parallel);
    const longest = maxOf(forced, (j) => j.prompt.length + Math.max(j.forced!.length, sampling.maxTokens));
    const shape: ContextShape = { ...scoring, nSeqMax: parallel, nCtxPerSeq: longest + 1, nBatch: Math.max(scoring.nBatch, parallel) };
    const projections: SampleProjections[] = new Array(forced.length);
    const replies: GenerationResult[] = new Array(forced.length);
    await this.run(jobs, shape, opts, false, (e) => {
      if (e.type !== "result") return;
      const r = e.result;
      const i = r.index >> 1;
      if (r.index % 2 === 0) projections[i] = r.projections!;
      else replies[i] = { ...generationResult(r), index: i };
    });
    return projections.map((p, i) => ({ projections: p, reply: replies[i]! }));
  }

  /** Residual reductions (prompt mean, last prompt token, response mean) at every layer (or `captureLayers`) per sample. */
  async capture(samples: readonly CaptureSample[], opts: CaptureOptions & CaptureCallbacks = {}): Promise<SampleActivations[]> {
    this.ensureAlive();
    this.checkCaptureLayers(opts.captureLayers);
    return this.forcedRun(samples, opts, { capture: true, captureLayers: opts.captureLayers }, (r) => r.activations!, opts.onSample);
  }

  /**
   * Projections of teacher-forced samples onto the probes' unit vectors (last prompt token, prompt
   * mean, response mean, and per response token when the probes ask): dot products taken in the
   * hook as rows stream by, so no residual row is ever kept.
   */
  async project(samples: readonly CaptureSample[], probes: ResolvedProbes, opts: ProjectOptions = {}): Promise<SampleProjections[]> {
    this.ensureAlive();
    return this.forcedRun(samples, opts, { capture: false, probes }, (r) => r.projections!, opts.onSample);
  }

  private async forcedRun<T>(
    samples: readonly CaptureSample[],
    opts: PrefixOptions & { steering?: ResolvedSteering; batchTokens?: number; exact?: boolean; signal?: AbortSignal },
    extra: Pick<Job, "capture" | "captureLayers" | "probes">,
    pick: (r: JobResult) => T,
    onSample: ((index: number, value: T) => void) | undefined,
  ): Promise<T[]> {
    const jobs = this.forcedJobs(samples, opts.steering, extra);
    if (jobs.length === 0) return [];
    const shape = this.scoringShape(jobs, opts.batchTokens, opts.exact ?? true);
    const out: T[] = onSample ? [] : new Array(jobs.length);
    await this.run(jobs, shape, opts, false, (e) => {
      if (e.type !== "result") return;
      const v = pick(e.result);
      if (onSample) onSample(e.result.index, v);
      else out[e.result.index] = v;
    });
    return out;
  }

  /** Teacher-forced jobs for samples (checked), steered by their own steering or `steering`. */
  private forcedJobs(samples: readonly CaptureSample[], steering: ResolvedSteering | undefined, extra: Pick<Job, "capture" | "captureLayers" | "probes">): Job[] {
    const shared = steering ?? NO_STEERING;
    return samples.map((s, i) => {
      if (!(s.tokens instanceof Int32Array)) throw new PersonaError("E_BAD_INPUT", `sample ${i}: tokens must be an Int32Array`);
      checkPositiveInt(`sample ${i}: promptLength`, s.promptLength);
      if (s.promptLength > s.tokens.length) {
        throw new PersonaError("E_BAD_INPUT", `sample ${i}: promptLength ${s.promptLength} exceeds its ${s.tokens.length} tokens`);
      }
      return {
        prompt: s.tokens.subarray(0, s.promptLength),
        forced: s.tokens.subarray(s.promptLength),
        ops: [...(s.steering ?? shared)],
        ...extra,
      };
    });
  }

  /** log P(continuation | prompt) token by token, and/or the top-k next tokens after the prompt. */
  async logprobs(requests: readonly LogprobRequest[], opts: PrefixOptions & { signal?: AbortSignal; exact?: boolean } = {}): Promise<LogprobResult[]> {
    this.ensureAlive();
    const jobs: Job[] = requests.map((r, i) => {
      if (!(r.prompt instanceof Int32Array)) throw new PersonaError("E_BAD_INPUT", `request ${i}: prompt must be an Int32Array`);
      const topK = r.topK ?? 0;
      checkPositiveInt(`request ${i}: topK`, topK, 0);
      return {
        prompt: r.prompt,
        forced: r.continuation,
        ops: [...(r.steering ?? NO_STEERING)],
        capture: false,
        logprobs: { continuation: (r.continuation?.length ?? 0) > 0, topK },
      };
    });
    if (jobs.length === 0) return [];
    const out: LogprobResult[] = new Array(jobs.length);
    await this.run(jobs, this.scoringShape(jobs, undefined, opts.exact ?? false), opts, false, (e) => {
      if (e.type !== "result") return;
      const c = e.result.continuationLogprobs ?? new Float64Array(0);
      out[e.result.index] = { continuation: c, total: c.reduce((a, b) => a + b, 0), top: e.result.top ?? [] };
    });
    return out;
  }

  /**
   * Scores token paths that all follow `prompt`, as a prefix tree decoded once (see tree.ts): for
   * each path log P(path | prompt) and the probability that a digit-initial token comes next. The
   * model keeps its last prompts' KV cells, so a prompt that starts like a recent one decodes only
   * the rest; `opts.stats.reusedTokens` is set to how many tokens that skipped.
   */
  async scoreTree(prompt: Int32Array, paths: readonly Int32Array[], opts: { stats?: { reusedTokens: number } } = {}): Promise<PathScore[]> {
    this.ensureAlive();
    if (!(prompt instanceof Int32Array) || !paths.every((p) => p instanceof Int32Array)) {
      throw new PersonaError("E_BAD_INPUT", "scoreTree takes an Int32Array prompt and Int32Array paths");
    }
    const r = await this.host.call<{ scores: PathScore[]; reused: number }>({ op: "scoreTree", modelId: this.id, prompt, paths: [...paths] });
    if (opts.stats) opts.stats.reusedTokens = r.reused;
    return r.scores;
  }

  /**
   * What this model's batch calls (generate, capture, project, logprobs) decoded so far: tokens
   * through the model, and prompt tokens whose KV cells were shared instead (a slot's previous
   * job, or a prefix forked from another request of the same call).
   */
  runStats(): Promise<RunTotals> {
    this.ensureAlive();
    return this.host.call({ op: "runTotals", modelId: this.id });
  }

  /**
   * Trains every weight tensor (or those `trainable` names) in place on next-token prediction:
   * AdamW (or SGD), `batchWindows` windows per step, linear warm-up then cosine decay. Llama
   * architecture only; the model must be all-F32 and loaded with `noMmap: true`. Later calls on
   * this model see the new weights; `save` writes them.
   */
  async train(opts: TrainOptions): Promise<TrainResult> {
    this.ensureAlive();
    if (opts.signal?.aborted) throw new PersonaError("E_ABORTED", "training cancelled before it started");
    let trainable: string[] | null = null;
    if (opts.trainable !== undefined) {
      const f = opts.trainable;
      const pick =
        f instanceof RegExp
          ? (name: string) => {
              f.lastIndex = 0;
              return f.test(name);
            }
          : f;
      if (typeof pick !== "function") throw new PersonaError("E_BAD_INPUT", "trainable must be a RegExp or a function of the tensor name");
      // The worker cannot call back into this thread mid-init, so resolve the names here.
      const gguf = await readGguf(this.info.path, { maxArrayItems: 0 });
      trainable = gguf.tensors.map((t) => t.name).filter((n) => pick(n));
    }
    checkTrainSteeringCount(opts.steering?.length ?? 0);
    const steering = resolveSteering(opts.steering ?? [], this.info).map((op, i) => {
      if (op.mask !== ALL_POSITIONS) throw new PersonaError("E_BAD_STEER_ARG", `steering #${i + 1}: training steers every position; positions must be "all"`);
      if (op.kind !== "add" && op.kind !== "ablate") throw new PersonaError("E_BAD_STEER_ARG", `steering #${i + 1}: training supports add and ablate, not cap`);
      return { layer: op.layer, kind: op.kind, vec: op.vec, coef: op.coef, ...keptMeans(op) };
    });
    const spec = packTrainOptions(opts, trainable, steering);
    const abort = new SharedArrayBuffer(4);
    const flag = new Int32Array(abort);
    const onAbort = () => Atomics.store(flag, 0, 1);
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await this.host.call<TrainResult>({ op: "train", modelId: this.id, spec, abort }, (e) => {
        if (e.type === "trainProgress") opts.onProgress?.(e.progress);
      });
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Writes the current weights to `path` as a GGUF with this model's original metadata (atomically). */
  save(path: string): Promise<void> {
    this.ensureAlive();
    if (typeof path !== "string" || path === "") throw new PersonaError("E_BAD_INPUT", "save path must be a non-empty string");
    return this.host.call({ op: "saveModel", modelId: this.id, path });
  }

  /**
   * Opens a long-lived decode loop (continuous batching): one context sized now for `slots`
   * requests of up to `ctxPerSlot` tokens, never rebuilt; requests join with `loop.submit(...)`
   * and stream their tokens. Dispose the loop (or the model) to free its context.
   */
  async openLoop(opts: LoopOptions): Promise<DecodeLoop> {
    this.ensureAlive();
    checkPositiveInt("slots", opts.slots);
    if (opts.slots > MAX_SLOTS) throw new PersonaError("E_BAD_INPUT", `slots must be at most ${MAX_SLOTS}, got ${opts.slots}`);
    checkPositiveInt("ctxPerSlot", opts.ctxPerSlot, 2);
    const batchTokens = opts.batchTokens ?? defaultBatchTokens(this.info.nVocab);
    checkPositiveInt("batchTokens", batchTokens);
    if (batchTokens > MAX_BATCH_TOKENS) throw new PersonaError("E_BAD_INPUT", `batchTokens must be at most ${MAX_BATCH_TOKENS}, got ${batchTokens}`);
    const options = { slots: opts.slots, ctxPerSlot: opts.ctxPerSlot, exact: opts.exact ?? false, batchTokens: Math.max(batchTokens, opts.slots) };
    const shape: ContextShape = { nSeqMax: options.slots, nCtxPerSeq: options.ctxPerSlot, nBatch: options.batchTokens, exact: options.exact };
    const id = await this.host.call<number>({ op: "loopOpen", modelId: this.id, shape });
    const loop = new DecodeLoop(this.host, id, options, (r) => this.loopJob(r), (l) => this.loops.delete(l));
    this.loops.add(loop);
    return loop;
  }

  private loopJob(r: LoopRequest): Job {
    this.ensureAlive();
    if (r.prompt instanceof Int32Array) {
      if (r.prompt.length === 0) throw new PersonaError("E_BAD_INPUT", "prompt must not be empty");
      const nVocab = this.info.nVocab;
      for (const t of r.prompt) if (t < 0 || t >= nVocab) throw new PersonaError("E_BAD_INPUT", `token id ${t} is outside the vocabulary (0..${nVocab - 1})`);
    } else {
      const p = r.prompt as Partial<PromptText> | null;
      if (typeof p?.text !== "string" || p.text === "" || typeof p.addSpecial !== "boolean" || typeof p.parseSpecial !== "boolean") {
        throw new PersonaError("E_BAD_INPUT", "prompt must be a non-empty Int32Array of token ids or { text, addSpecial, parseSpecial } with non-empty text");
      }
    }
    this.checkCaptureLayers(r.captureLayers);
    const job: Job = {
      // A text prompt's tokens come from the worker (DecodeLoop sends the text along).
      prompt: r.prompt instanceof Int32Array ? r.prompt : new Int32Array(0),
      sampling: samplerSettings({ ...r, seed: r.seed ?? 0 }, 0),
      ops: [...(r.steering ?? NO_STEERING)],
      capture: r.capture ?? false,
      captureLayers: r.captureLayers,
      probes: r.probes,
      feedLast: true,
    };
    if (r.logprobs !== undefined) {
      checkPositiveInt("logprobs", r.logprobs, 0);
      if (r.logprobs > MAX_TOP_LOGPROBS) throw new PersonaError("E_BAD_INPUT", `logprobs must be at most ${MAX_TOP_LOGPROBS}, got ${r.logprobs}`);
      job.tokenLogprobs = r.logprobs;
    }
    return job;
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    for (const loop of this.loops) loop.markClosed();
    this.onDispose(this);
    await this.host.call({ op: "freeModel", modelId: this.id }).catch(() => undefined);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  /** Teacher-forced work: whole sequences, all rows kept, so bound the logits buffer by vocabulary. */
  private scoringShape(jobs: Job[], batchTokens: number | undefined, exact: boolean): ContextShape {
    const nBatch = batchTokens ?? defaultBatchTokens(this.info.nVocab);
    checkPositiveInt("batchTokens", nBatch);
    // Buffers are sized by it (a 2^31 batch failed allocating a typed array in the worker).
    if (nBatch > MAX_BATCH_TOKENS) throw new PersonaError("E_BAD_INPUT", `batchTokens must be at most ${MAX_BATCH_TOKENS}, got ${nBatch}`);
    const longest = maxOf(jobs, (j) => j.prompt.length + (j.forced?.length ?? 0));
    const parallel = Math.min(jobs.length, Math.max(1, Math.min(16, Math.floor((nBatch * 2) / longest) || 1)));
    return { nSeqMax: parallel, nCtxPerSeq: longest + 1, nBatch: Math.max(nBatch, parallel), exact };
  }

  private async run(
    jobs: Job[],
    shape: ContextShape,
    opts: PrefixOptions & { signal?: AbortSignal },
    streamTokens: boolean,
    onEvent: (e: WorkerEvent) => void,
  ): Promise<void> {
    const { signal } = opts;
    const sharePrefixes = opts.sharePrefixes ?? true;
    signal?.throwIfAborted();
    const abort = new SharedArrayBuffer(4);
    const flag = new Int32Array(abort);
    const onAbort = () => Atomics.store(flag, 0, 1);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      // One message per slice, numbered back into the caller's order: a message is copied whole
      // (structured clone) and held by the worker until done, so its size must not grow with the input.
      for (let start = 0; start < jobs.length; start += JOBS_PER_MESSAGE) {
        const slice = jobs.slice(start, start + JOBS_PER_MESSAGE);
        await this.host.call({ op: "run", modelId: this.id, jobs: slice, shape, sharePrefixes, streamTokens, abort }, (e) => onEvent(offsetEvent(e, start)));
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  private ensureAlive(): void {
    if (this.disposed) throw new PersonaError("E_DISPOSED", "model used after dispose()");
  }
}

/** Tokens per decode when every row may ask for logits: bounds the logits buffer (4 bytes × vocabulary × rows) near 256 MiB. */
function defaultBatchTokens(nVocab: number): number {
  return Math.min(512, Math.max(64, Math.floor(2 ** 28 / (4 * nVocab))));
}

/** Jobs per worker message: ≥ any sensible `parallel`, so slicing leaves batches full. */
export const JOBS_PER_MESSAGE = 1024;

function offsetEvent(e: WorkerEvent, start: number): WorkerEvent {
  if (start === 0) return e;
  if (e.type === "result") return { ...e, result: { ...e.result, index: e.result.index + start } };
  if (e.type === "token") return { ...e, index: e.index + start };
  return e;
}

function generationResult(r: JobResult): GenerationResult {
  const g: GenerationResult = { index: r.index, tokens: r.tokens, text: r.text ?? "", finishReason: r.finishReason };
  if (r.activations) g.activations = r.activations;
  if (r.projections) g.projections = r.projections;
  return g;
}

function joinSample(prompt: Int32Array, response: Int32Array): CaptureSample {
  const tokens = new Int32Array(prompt.length + response.length);
  tokens.set(prompt);
  tokens.set(response, prompt.length);
  return { tokens, promptLength: prompt.length };
}

/** `leastMaxTokens` 0 lets a loop request only read its prompt (projections, a cached prefix). */
function samplerSettings(o: GenerateOptions, leastMaxTokens = 1): SamplerSettings {
  const s: SamplerSettings = {
    temperature: o.temperature ?? 1,
    topP: o.topP ?? 1,
    topK: o.topK ?? 0,
    minP: o.minP ?? 0,
    seed: o.seed ?? 0,
    maxTokens: o.maxTokens ?? 256,
    minTokens: o.minTokens ?? 0,
  };
  if (!(s.temperature >= 0)) throw new PersonaError("E_BAD_INPUT", `temperature must be ≥ 0, got ${s.temperature}`);
  if (!(s.topP > 0 && s.topP <= 1)) throw new PersonaError("E_BAD_INPUT", `top-p must be in (0, 1], got ${s.topP}`);
  if (!(s.minP >= 0 && s.minP < 1)) throw new PersonaError("E_BAD_INPUT", `min-p must be in [0, 1), got ${s.minP}`);
  checkPositiveInt("top-k", s.topK, 0);
  checkPositiveInt("max tokens", s.maxTokens, leastMaxTokens);
  checkPositiveInt("min tokens", s.minTokens, 0);
  if (!Number.isInteger(s.seed)) throw new PersonaError("E_BAD_INPUT", `seed must be an integer, got ${s.seed}`);
  return s;
}

export type { JobResult };
