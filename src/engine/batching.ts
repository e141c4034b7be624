/**
 * The one decode loop behind generation, capture, scoring and the long-lived request loop: jobs
 * share a context, each in its own sequence (slot); every step packs the pending tokens of all
 * active jobs into one batch. Jobs join from a queue between steps and leave when done or
 * cancelled, so the same scheduler serves a batch run to completion and a loop that requests join
 * and leave while it runs. A job feeds its prompt, then either forced tokens (teacher forcing:
 * capture, log-probabilities) or sampled ones.
 *
 * With `reusePrefix`, a slot keeps its KV cells after its job, and a later job whose tokens start
 * the same way (and were steered the same way) skips them. With `fork`, a job whose prompt starts
 * like a running job's (the n rollouts of one question, a sample and the base reply to its prompt)
 * shares that job's KV cells for the common prefix (llama_memory_seq_cp) instead of decoding it
 * again; a job that observes its prompt rows (capture, probes) forks only from a job that has not
 * yet decoded them, and takes those rows from the donor's decode as they pass.
 */
import { PersonaError } from "../errors.js";
import { CaptureAccumulator, ProjectionAccumulator, type ResolvedProbes, type RowSink, type SampleActivations, type SampleProjections } from "./capture.js";
import type { NativeContext, RowPlan, SlotHooks, Tee } from "./native/NativeContext.js";
import { ALL_POSITIONS, ROW_LAST_PROMPT, ROW_PROMPT, ROW_RESPONSE, type SteeringOp } from "./steering.js";
import type { TokenLogprob } from "./types.js";

export interface SamplerSettings {
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  seed: number;
  maxTokens: number;
  minTokens: number;
}

export interface Job {
  prompt: Int32Array;
  /** Teacher-forced continuation fed after the prompt. */
  forced?: Int32Array;
  /** Sample this many tokens (at most) after the prompt. Mutually exclusive with `forced`. */
  sampling?: SamplerSettings;
  ops: readonly SteeringOp[];
  capture: boolean;
  /** Layers to capture; undefined = all. Fewer layers = fewer graph splits and less memory. */
  captureLayers?: readonly number[];
  /** Project these layers' residuals onto unit vectors (keeps only the dot products). */
  probes?: ResolvedProbes;
  /** Score log P(forced | prompt) and/or return the top-k tokens after the prompt. */
  logprobs?: { continuation: boolean; topK: number };
  /** Per sampled token: its log-probability and this many most likely alternatives (0 = none). */
  tokenLogprobs?: number;
  /**
   * Feed the token that hits the token limit through the model too, so every generated token has
   * its per-token projection (streamed with it).
   */
  feedLast?: boolean;
}

export interface JobResult {
  index: number;
  tokens: Int32Array;
  /** Detokenized sampled tokens (generation jobs only). */
  text?: string;
  finishReason: "stop" | "length";
  activations?: SampleActivations;
  projections?: SampleProjections;
  continuationLogprobs?: Float64Array;
  top?: TokenLogprob[];
  /** Log-probability of each sampled token (with `tokenLogprobs`). */
  tokenLogprobs?: Float64Array;
  /** Prompt tokens whose KV cells were reused from the slot's previous job. */
  reusedTokens: number;
}

/** A sampled token as it is streamed. */
export interface TokenEvent {
  token: number;
  /** One projection per probe (per-token probes only). */
  projections?: Float32Array;
  logprob?: number;
  top?: TokenLogprob[];
}

/** What happened to one job, as it happens. */
export interface JobEvents {
  /** The prompt went through the model: its last token's projections (with probes) are known. */
  onPrompt?(nPromptTokens: number, reusedTokens: number, projections: Float64Array | undefined): void;
  onToken?(event: TokenEvent): void;
  onResult(result: JobResult): void;
}

/** The sampler chain and stop rules live with the caller, who owns the native sampler API. */
export interface Sampler {
  sample(batchIndex: number, suppress: Int32Array | null): number;
  free(): void;
}
export type SamplerFactory = (settings: SamplerSettings) => Sampler;

export interface SchedulerOptions {
  /** Sequences decoded together, ≤ the context's n_seq_max. */
  slots: number;
  /** Keep each slot's KV cells after its job and reuse a matching prefix. */
  reusePrefix: boolean;
  /**
   * A job with probes may reuse a slot's cached prefix, its prompt mean then covering only the
   * prompt tokens it fed (the loop's choice). Otherwise a job that observes its prompt rows
   * reuses only by forking, which keeps every row.
   */
  partialPrompts: boolean;
  /** Share a prompt prefix with a running job's cells (see the file comment). */
  fork: boolean;
}

export interface SchedulerStats {
  slots: number;
  active: number;
  queued: number;
  /** Tokens that went through the model (prompt and generated). */
  tokensDecoded: number;
  /** Prompt (and teacher-forced) tokens that went through the model. */
  promptTokensDecoded: number;
  /** Prompt tokens skipped because their slot's KV cells were reused. */
  tokensReused: number;
  /** Prompt tokens skipped because another sequence's KV cells were shared (forked). */
  tokensForked: number;
  steps: number;
}

interface Active {
  key: number;
  seq: number;
  job: Job;
  events: JobEvents;
  input: Int32Array;
  fed: number;
  generated: number[];
  /** Generated tokens fed back through the model (all but the last, which is fed next). */
  generatedFed: number;
  sampler: Sampler | null;
  hooks: SlotHooks;
  capture: CaptureAccumulator | null;
  projection: ProjectionAccumulator | null;
  /** Some sink reads the last block, which keeps only rows that ask for logits: ask for all. */
  wantAllRows: boolean;
  logprobs: Float64Array | null;
  top: TokenLogprob[] | undefined;
  tokenLogprobs: number[] | null;
  /** Batch index whose logits this job reads after the current decode, or -1. */
  pendingOutput: number;
  reused: number;
  promptDone: boolean;
  /** A sampled token streamed once it went through the model (per-token projections). */
  held: TokenEvent | null;
  /** The last token is fed only for its projection; the job ends after that step. */
  draining: boolean;
  /** Waiting, without decoding, for `donor` to decode its first `n` tokens, whose cells it then shares. */
  waitFor: { donor: Active; n: number } | null;
  /** Waiting forks whose sinks take this job's rows below their `n`. */
  tees: Active[];
}

/** What a sequence's KV cells hold, or will once its prompt is decoded. */
interface Prefix {
  tokens: Int32Array;
  ops: readonly SteeringOp[];
  promptLength: number;
}

/** What a slot's KV cells hold once its job left (prefix reuse). */
interface Cached extends Prefix {
  lastUsed: number;
}

interface Queued {
  key: number;
  job: Job;
  events: JobEvents;
}

function concat(a: Int32Array, b: Int32Array | undefined): Int32Array {
  if (!b || b.length === 0) return a;
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** log Σ exp(logits) (float64 accumulation). */
function logSumExp(logits: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return max + Math.log(sum);
}

/** log-softmax value of `target` in a logits row (float64 accumulation). */
export function logSoftmaxAt(logits: Float32Array, target: number): number {
  return logits[target]! - logSumExp(logits);
}

function topLogprobs(logits: Float32Array, k: number, lse = logSumExp(logits)): TokenLogprob[] {
  const best: TokenLogprob[] = [];
  if (k <= 0) return best;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]!;
    if (best.length === k && v <= best[k - 1]!.logprob + lse) continue;
    best.push({ token: i, logprob: v - lse });
    best.sort((a, b) => b.logprob - a.logprob);
    if (best.length > k) best.pop();
  }
  return best;
}

function sameOps(a: readonly SteeringOp[], b: readonly SteeringOp[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x.layer !== y.layer || x.kind !== y.kind || x.coef !== y.coef || x.mask !== y.mask || x.vec.length !== y.vec.length) return false;
    // Ablations keeping other means steer the same cells differently.
    if (x.mean !== y.mean || x.lastPromptMean !== y.lastPromptMean) return false;
    for (let j = 0; j < x.vec.length; j++) if (x.vec[j] !== y.vec[j]) return false;
  }
  return true;
}

const everywhere = (ops: readonly SteeringOp[]) => ops.every((op) => op.mask === ALL_POSITIONS);
const onPlainPrompt = (ops: readonly SteeringOp[]) => ops.filter((op) => (op.mask & (1 << ROW_PROMPT)) !== 0);

/**
 * How many leading tokens of `input` cells holding `cached` can stand in for: cells are shared only
 * where the same steering edited them. Steering on every position edits all tokens alike; other
 * steering edits a token by its class (prompt, last prompt, response), which changes when the
 * prompt boundary moves, so then only tokens that were and stay plain prompt tokens are shared,
 * and only the ops that touch plain prompt tokens must agree (response-only steering reuses an
 * unsteered prompt). At least the last prompt token is always fed: its logits and row are needed.
 */
function sharedLength(cached: Prefix, job: Job, input: Int32Array): number {
  let limit = Math.min(cached.tokens.length, job.prompt.length - 1);
  if (!(everywhere(job.ops) && everywhere(cached.ops) && sameOps(cached.ops, job.ops))) {
    if (!sameOps(onPlainPrompt(cached.ops), onPlainPrompt(job.ops))) return 0;
    limit = Math.min(limit, cached.promptLength - 1);
  }
  let n = 0;
  while (n < limit && cached.tokens[n] === input[n]) n++;
  return n;
}

export class Scheduler {
  private readonly slots: (Active | undefined)[];
  private readonly cached: (Cached | undefined)[];
  private readonly queue: Queued[] = [];
  private readonly pending = new Map<Active, { batchIndex: number; target: number }[]>();
  private readonly rows: RowPlan;
  private readonly nLayers: number;
  private readonly nEmbd: number;
  private active = 0;
  private tokensDecoded = 0;
  private promptTokensDecoded = 0;
  private tokensReused = 0;
  private tokensForked = 0;
  private steps = 0;

  constructor(
    private readonly ctx: NativeContext,
    private readonly makeSampler: SamplerFactory,
    private readonly eogTokens: Int32Array,
    private readonly options: SchedulerOptions,
  ) {
    const n = Math.min(options.slots, ctx.options.nSeqMax);
    this.slots = new Array(n).fill(undefined);
    this.cached = new Array(n).fill(undefined);
    const nBatch = ctx.options.nBatch;
    this.rows = { nTokens: 0, owner: new Int32Array(nBatch), pos: new Int32Array(nBatch), cls: new Uint8Array(nBatch), outputs: new Int32Array(nBatch), nOutputs: 0 };
    this.nLayers = ctx.model.info.nLayer + 1;
    this.nEmbd = ctx.model.info.nEmbd;
  }

  /** Queues a job; it joins at the next step with a free slot. `key` names it in results and `cancel`. */
  submit(key: number, job: Job, events: JobEvents): void {
    this.queue.push({ key, job, events });
  }

  /** Drops a queued job or ends an active one between steps; false when `key` is unknown. */
  cancel(key: number): boolean {
    const q = this.queue.findIndex((j) => j.key === key);
    if (q >= 0) {
      this.queue.splice(q, 1);
      return true;
    }
    const seq = this.slots.findIndex((s) => s?.key === key);
    if (seq < 0) return false;
    this.release(seq);
    return true;
  }

  get busy(): boolean {
    return this.active > 0 || this.queue.length > 0;
  }

  stats(): SchedulerStats {
    return {
      slots: this.slots.length,
      active: this.active,
      queued: this.queue.length,
      tokensDecoded: this.tokensDecoded,
      promptTokensDecoded: this.promptTokensDecoded,
      tokensReused: this.tokensReused,
      tokensForked: this.tokensForked,
      steps: this.steps,
    };
  }

  /** Keys of the queued and active jobs (to fail them all when a decode fails). */
  keys(): number[] {
    return [...this.queue.map((q) => q.key), ...this.slots.flatMap((s) => (s ? [s.key] : []))];
  }

  /** Ends every job without results, forgets the cached prefixes and empties the KV cache. */
  clear(): void {
    this.queue.length = 0;
    for (let seq = 0; seq < this.slots.length; seq++) if (this.slots[seq]) this.release(seq);
    this.cached.fill(undefined);
    this.ctx.clearMemory();
  }

  /** One decode: fills free slots from the queue, packs a batch, decodes, samples, streams. */
  step(): void {
    this.admit();
    if (this.active === 0) return;
    const nSlots = this.slots.length;
    const nBatch = this.ctx.options.nBatch;
    const rows = this.rows;
    const batch = this.ctx.batch;
    batch.clear();
    rows.nOutputs = 0;
    const hookSlots: (SlotHooks | undefined)[] = new Array(nSlots);
    const add = (seq: number, token: number, pos: number, cls: number, logits: boolean) => {
      const i = batch.add(token, pos, seq, logits);
      rows.owner[i] = seq;
      rows.pos[i] = pos;
      rows.cls[i] = cls;
      if (logits) rows.outputs[rows.nOutputs++] = i;
      return i;
    };
    // Generated tokens first (one per job, cheap), then prompt chunks.
    for (let seq = 0; seq < nSlots; seq++) {
      const s = this.slots[seq];
      if (!s || s.fed < s.input.length) continue;
      const wantLogits = !s.draining || s.wantAllRows;
      const i = add(seq, s.generated[s.generated.length - 1]!, s.input.length + s.generated.length - 1, ROW_RESPONSE, wantLogits);
      s.pendingOutput = wantLogits ? i : -1;
      s.generatedFed++;
      hookSlots[seq] = s.hooks;
    }
    for (let seq = 0; seq < nSlots && batch.size < nBatch; seq++) {
      const s = this.slots[seq];
      if (!s || s.waitFor || s.fed >= s.input.length) continue;
      const promptLen = s.job.prompt.length;
      const scoring = s.logprobs !== null;
      s.pendingOutput = -1;
      while (s.fed < s.input.length && batch.size < nBatch) {
        const p = s.fed++;
        const cls = p < promptLen - 1 ? ROW_PROMPT : p === promptLen - 1 ? ROW_LAST_PROMPT : ROW_RESPONSE;
        const predictsForced = scoring && p >= promptLen - 1 && p < s.input.length - 1;
        const needsNext = s.fed === s.input.length && (s.sampler !== null || (s.job.logprobs?.topK ?? 0) > 0);
        const i = add(seq, s.input[p]!, p, cls, s.wantAllRows || predictsForced || needsNext || p === promptLen - 1);
        if (predictsForced || p === promptLen - 1 || needsNext) this.collectLater(s, i, p - (promptLen - 1));
        this.promptTokensDecoded++;
      }
      hookSlots[seq] = s.tees.length === 0 ? s.hooks : { ...s.hooks, tees: s.tees.map((f): Tee => ({ below: f.waitFor!.n, sinks: f.hooks.sinks })) };
    }
    rows.nTokens = batch.size;
    // Every waiting job waits on one that decodes (the first of a chain never waits).
    if (batch.size === 0) throw new PersonaError("E_INTERNAL", "a decode step with nothing to decode");

    this.ctx.decode(rows, hookSlots);
    this.steps++;
    this.tokensDecoded += batch.size;

    // Forks first: a donor that finishes below gives its cells up.
    for (const s of this.slots) if (s?.waitFor && s.waitFor.donor.fed >= s.waitFor.n) this.share(s);
    for (let seq = 0; seq < nSlots; seq++) {
      const s = this.slots[seq];
      if (s) this.afterDecode(seq, s);
    }
  }

  private afterDecode(seq: number, s: Active): void {
    this.consumeScores(s);
    if (s.fed < s.input.length) return;
    if (!s.promptDone) {
      s.promptDone = true;
      s.events.onPrompt?.(s.job.prompt.length, s.reused, s.projection?.promptLastNow());
    }
    if (s.held) {
      const held = s.held;
      s.held = null;
      held.projections = s.projection!.tokenRow(s.generatedFed - 1);
      s.events.onToken?.(held);
    }
    // Forced jobs, prompt-only requests (maxTokens 0) and a drained last token end here.
    if (s.draining || !s.sampler || s.job.sampling!.maxTokens === 0) return this.finish(seq, "length");
    if (s.pendingOutput < 0) return;
    const settings = s.job.sampling!;
    const suppress = s.generated.length < settings.minTokens ? this.eogTokens : null;
    const k = s.job.tokenLogprobs;
    let lse = 0;
    let top: TokenLogprob[] | undefined;
    let logits: Float32Array | undefined;
    if (k !== undefined) {
      // The model's distribution, before end-of-generation suppression.
      logits = this.ctx.logits(s.pendingOutput);
      lse = logSumExp(logits);
      if (k > 0) top = topLogprobs(logits, k, lse);
    }
    const token = s.sampler.sample(s.pendingOutput, suppress);
    s.pendingOutput = -1;
    if (this.isEog(token)) return this.finish(seq, "stop");
    s.generated.push(token);
    const event: TokenEvent = { token };
    if (logits) {
      event.logprob = logits[token]! - lse;
      s.tokenLogprobs!.push(event.logprob);
      if (top) event.top = top;
    }
    const last = s.generated.length >= settings.maxTokens;
    if (s.projection?.perTokenEnabled && (!last || s.job.feedLast)) {
      s.held = event;
      if (last) s.draining = true;
      return;
    }
    s.events.onToken?.(event);
    if (last) this.finish(seq, "length");
  }

  private admit(): void {
    while (this.queue.length > 0 && this.active < this.slots.length) {
      const q = this.queue.shift()!;
      const input = concat(q.job.prompt, q.job.forced);
      const target = this.options.reusePrefix ? this.bestSlot(q.job, input) : { seq: this.slots.indexOf(undefined), reuse: 0 };
      const fork = this.options.fork ? this.bestDonor(q.job, input) : null;
      if (fork && fork.n > target.reuse) this.start(target.seq, q, input, 0, fork);
      else this.start(target.seq, q, input, target.reuse, null);
    }
  }

  /** Whether a job's sinks read the last layer, whose block keeps only rows that ask for logits. */
  private readsLastLayer(job: Job): boolean {
    const last = this.nLayers - 1;
    return (job.capture && (job.captureLayers === undefined || job.captureLayers.includes(last))) || (job.probes?.layers.includes(last) ?? false);
  }

  /**
   * The running job whose cells (decoded or about to be) cover most of `input`; the first among
   * equals, so a plan depends on the job list alone. A job that needs all its prompt rows takes
   * them from the donor's decode, so the donor must not have decoded any yet, nor wait itself,
   * and must ask for every row of the last layer if the job reads it; and it forks only a whole
   * prompt (all but its last token), since a waiting job cannot pass rows on: a fork of a shared
   * system prompt alone would keep the next job with the same question from forking all of it.
   */
  private bestDonor(job: Job, input: Int32Array): { donor: Active; n: number } | null {
    const observes = this.takesPromptRows(job);
    let best: { donor: Active; n: number } | null = null;
    for (const s of this.slots) {
      if (!s) continue;
      if (observes && !this.canTee(job, s)) continue;
      const n = sharedLength({ tokens: s.input, ops: s.job.ops, promptLength: s.job.prompt.length }, job, input);
      if (observes && n < job.prompt.length - 1) continue;
      if (n > (best?.n ?? 0)) best = { donor: s, n };
    }
    return best;
  }

  /** The free slot whose cache covers most of `input`; among equals, the one unused longest. */
  private bestSlot(job: Job, input: Int32Array): { seq: number; reuse: number } {
    const reuses = !this.takesPromptRows(job);
    let best = { seq: -1, reuse: -1, lastUsed: Infinity };
    for (let seq = 0; seq < this.slots.length; seq++) {
      if (this.slots[seq]) continue;
      const c = this.cached[seq];
      const reuse = c && reuses ? sharedLength(c, job, input) : 0;
      const lastUsed = c?.lastUsed ?? -1;
      if (reuse > best.reuse || (reuse === best.reuse && lastUsed < best.lastUsed)) best = { seq, reuse, lastUsed };
    }
    return best;
  }

  private start(seq: number, q: Queued, input: Int32Array, reuse: number, fork: { donor: Active; n: number } | null): void {
    const { job } = q;
    // Drops the cells past the reused prefix (all of them when nothing is reused); a partial
    // removal that fails (recurrent memory) empties the sequence, and then nothing is reused.
    if (this.cached[seq] && !this.ctx.removeTokens(seq, reuse)) reuse = 0;
    this.cached[seq] = undefined;
    this.tokensReused += reuse;
    const s: Active = {
      key: q.key,
      seq,
      job,
      events: q.events,
      input,
      fed: reuse,
      generated: [],
      generatedFed: 0,
      sampler: job.sampling ? this.makeSampler(job.sampling) : null,
      ...this.sinks(job),
      logprobs: job.logprobs?.continuation ? new Float64Array(job.forced?.length ?? 0) : null,
      top: undefined,
      tokenLogprobs: job.tokenLogprobs !== undefined ? [] : null,
      pendingOutput: -1,
      reused: reuse,
      promptDone: false,
      held: null,
      draining: false,
      waitFor: null,
      tees: [],
    };
    this.slots[seq] = s;
    this.active++;
    if (!fork) return;
    s.waitFor = fork;
    if (fork.donor.fed >= fork.n) this.share(s);
    // bestDonor picked a donor that can pass the rows for a job that needs them all; a loop's
    // monitored request (partial prompt means) takes them too where the donor can.
    else if (s.hooks.sinks.length > 0 && this.canTee(job, fork.donor)) fork.donor.tees.push(s);
  }

  /** Whether donor `s` can still pass `job` its prompt rows: it has decoded none, waits for no one, and keeps the last layer's rows if the job reads them. */
  private canTee(job: Job, s: Active): boolean {
    return s.fed === 0 && !s.waitFor && (!this.readsLastLayer(job) || s.wantAllRows);
  }

  /**
   * Whether a job needs every prompt row observed: capture does; probes too, unless partial prompt
   * means are accepted (the loop's choice: a monitored request then reuses and forks prompts as a
   * plain one does, its prompt mean covering the tokens it fed, its last prompt token always among them).
   */
  private takesPromptRows(job: Job): boolean {
    return job.capture || (job.probes !== undefined && !this.options.partialPrompts);
  }

  /** A job's capture and projection accumulators, fresh. */
  private sinks(job: Job): Pick<Active, "hooks" | "capture" | "projection" | "wantAllRows"> {
    const capture = job.capture ? new CaptureAccumulator(this.nLayers, this.nEmbd, job.captureLayers) : null;
    const projection = job.probes ? new ProjectionAccumulator(this.nLayers, this.nEmbd, job.probes) : null;
    const sinks: RowSink[] = [];
    if (capture) sinks.push(capture);
    if (projection) sinks.push(projection);
    return { hooks: { ops: job.ops, sinks }, capture, projection, wantAllRows: sinks.some((k) => k.mask[this.nLayers - 1] === 1) };
  }

  /**
   * A waiting fork takes its donor's first n cells now that they are decoded. Where the memory
   * cannot share them (see sharePrefix) or the donor left before decoding them, the fork decodes
   * its prompt itself, with fresh sinks (a tee may have fed them part of the donor's rows).
   */
  private share(s: Active): void {
    const { donor, n } = s.waitFor!;
    s.waitFor = null;
    const tee = donor.tees.indexOf(s);
    if (tee >= 0) donor.tees.splice(tee, 1);
    if (donor.fed >= n && this.slots[donor.seq] === donor && this.ctx.sharePrefix(donor.seq, s.seq, n)) {
      s.fed = s.reused = n;
      this.tokensForked += n;
    } else if (tee >= 0) {
      Object.assign(s, this.sinks(s.job));
    }
  }

  /** Frees slot `seq`; its KV cells stay for the next job when prefixes are reused. */
  private release(seq: number): Active {
    const s = this.slots[seq]!;
    // Forks waiting on it take its cells if they are there, else decode their prompts themselves.
    for (const f of this.slots) if (f?.waitFor?.donor === s) this.share(f);
    if (s.waitFor) {
      const tees = s.waitFor.donor.tees;
      if (tees.includes(s)) tees.splice(tees.indexOf(s), 1);
      s.waitFor = null;
    }
    this.slots[seq] = undefined;
    this.active--;
    this.pending.delete(s);
    s.sampler?.free();
    if (this.options.reusePrefix) {
      const tokens = new Int32Array(s.fed + s.generatedFed);
      tokens.set(s.input.subarray(0, s.fed));
      if (s.fed === s.input.length) tokens.set(s.generated.slice(0, s.generatedFed), s.fed);
      this.cached[seq] = { tokens, ops: s.job.ops, promptLength: s.job.prompt.length, lastUsed: this.steps };
    } else {
      this.ctx.removeSequence(seq);
    }
    return s;
  }

  private finish(seq: number, finishReason: "stop" | "length"): void {
    const s = this.release(seq);
    const result: JobResult = { index: s.key, tokens: Int32Array.from(s.generated), finishReason, reusedTokens: s.reused };
    if (s.capture) result.activations = s.capture.finish();
    if (s.projection) result.projections = s.projection.finish();
    if (s.logprobs) result.continuationLogprobs = s.logprobs;
    if (s.top) result.top = s.top;
    if (s.tokenLogprobs) result.tokenLogprobs = Float64Array.from(s.tokenLogprobs);
    s.events.onResult(result);
  }

  /** Remembers a row whose logits are read after the decode (scoring or top-k). */
  private collectLater(s: Active, batchIndex: number, forcedIndex: number): void {
    s.pendingOutput = batchIndex;
    if (!s.logprobs && !(s.job.logprobs?.topK ?? 0)) return;
    const list = this.pending.get(s) ?? [];
    list.push({ batchIndex, target: forcedIndex });
    this.pending.set(s, list);
  }

  private consumeScores(s: Active): void {
    const list = this.pending.get(s);
    if (!list) return;
    this.pending.delete(s);
    const forced = s.job.forced;
    for (const { batchIndex, target } of list) {
      const logits = this.ctx.logits(batchIndex);
      if (target === 0 && (s.job.logprobs?.topK ?? 0) > 0) s.top = topLogprobs(logits, s.job.logprobs!.topK);
      if (s.logprobs && forced && target >= 0 && target < forced.length) s.logprobs[target] = logSoftmaxAt(logits, forced[target]!);
    }
  }

  private isEog(token: number): boolean {
    const e = this.eogTokens;
    for (let i = 0; i < e.length; i++) if (e[i] === token) return true;
    return false;
  }
}

export interface RunHooks {
  onResult(result: JobResult): void;
  onToken?(index: number, token: number): void;
  shouldAbort?(): boolean;
}

/** Lets queued worker messages (loop requests, cancels) in between two decode steps. */
export const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Runs a job list to completion on a fresh scheduler; `parallel` ≤ the context's n_seq_max. With
 * `sharePrefixes`, jobs share prompt prefixes (a slot's cache, forks) but keep every prompt row;
 * the plan depends on the job list alone, so a run reproduces wherever it runs.
 */
export async function runJobs(
  ctx: NativeContext,
  makeSampler: SamplerFactory,
  eogTokens: Int32Array,
  jobs: readonly Job[],
  hooks: RunHooks,
  opts: { parallel: number; sharePrefixes: boolean },
): Promise<SchedulerStats> {
  const share = opts.sharePrefixes;
  const scheduler = new Scheduler(ctx, makeSampler, eogTokens, { slots: opts.parallel, reusePrefix: share, partialPrompts: false, fork: share });
  jobs.forEach((job, i) => {
    const onToken = hooks.onToken;
    scheduler.submit(i, job, { onResult: hooks.onResult, onToken: onToken ? (t) => onToken(i, t.token) : undefined });
  });
  ctx.clearMemory();
  try {
    while (scheduler.busy) {
      if (hooks.shouldAbort?.()) throw new PersonaError("E_ABORTED", "cancelled");
      scheduler.step();
      await yieldToEventLoop();
    }
    return scheduler.stats();
  } finally {
    scheduler.clear();
  }
}
