/**
 * The one decode loop behind generation, capture and scoring: many jobs share a context, each
 * in its own sequence; every step packs pending tokens of all active jobs into one batch, finished
 * jobs free their KV cells and their slot is refilled from the queue. A job feeds its prompt, then
 * either forced tokens (teacher forcing: capture, log-probabilities) or sampled ones.
 */
import { PersonaError } from "../errors.js";
import { CaptureAccumulator, ProjectionAccumulator, type ResolvedProbes, type RowSink, type SampleActivations, type SampleProjections } from "./capture.js";
import type { NativeContext, RowPlan, SlotHooks } from "./native/NativeContext.js";
import { ROW_LAST_PROMPT, ROW_PROMPT, ROW_RESPONSE, type SteeringOp } from "./steering.js";

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
  top?: { token: number; logprob: number }[];
}

export interface RunHooks {
  onResult(result: JobResult): void;
  onToken?(index: number, token: number): void;
  shouldAbort?(): boolean;
}

/** The sampler chain and stop rules live with the caller, who owns the native sampler API. */
export interface Sampler {
  sample(batchIndex: number, suppress: Int32Array | null): number;
  free(): void;
}
export type SamplerFactory = (settings: SamplerSettings) => Sampler;

interface Slot {
  index: number;
  job: Job;
  input: Int32Array;
  fed: number;
  generated: number[];
  sampler: Sampler | null;
  hooks: SlotHooks;
  capture: CaptureAccumulator | null;
  projection: ProjectionAccumulator | null;
  /** Some sink reads the last block, which keeps only rows that ask for logits: ask for all. */
  wantAllRows: boolean;
  logprobs: Float64Array | null;
  top: { token: number; logprob: number }[] | undefined;
  /** Batch index whose logits this slot reads after the current decode, or -1. */
  pendingOutput: number;
  /** For scoring: which forced token the pending output row predicts, or -1. */
  pendingTarget: number;
}

function concat(a: Int32Array, b: Int32Array | undefined): Int32Array {
  if (!b || b.length === 0) return a;
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** log-softmax value of `target` in a logits row (float64 accumulation). */
export function logSoftmaxAt(logits: Float32Array, target: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return logits[target]! - max - Math.log(sum);
}

function topLogprobs(logits: Float32Array, k: number): { token: number; logprob: number }[] {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  const best: { token: number; logprob: number }[] = [];
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]!;
    if (best.length === k && v <= best[k - 1]!.logprob + lse) continue;
    best.push({ token: i, logprob: v - lse });
    best.sort((a, b) => b.logprob - a.logprob);
    if (best.length > k) best.pop();
  }
  return best;
}

export class BatchRunner {
  constructor(
    private readonly ctx: NativeContext,
    private readonly makeSampler: SamplerFactory,
    private readonly eogTokens: Int32Array,
  ) {}

  /** `parallel` ≤ the context's n_seq_max; the caller sized the KV cache for that many sequences. */
  run(jobs: readonly Job[], hooks: RunHooks, parallel: number): void {
    const nSeqMax = Math.min(parallel, this.ctx.options.nSeqMax);
    const nBatch = this.ctx.options.nBatch;
    const nLayers = this.ctx.model.info.nLayer + 1;
    const nEmbd = this.ctx.model.info.nEmbd;
    const slots: (Slot | undefined)[] = new Array(nSeqMax).fill(undefined);
    const rows: RowPlan = {
      nTokens: 0,
      owner: new Int32Array(nBatch),
      cls: new Uint8Array(nBatch),
      outputs: new Int32Array(nBatch),
      nOutputs: 0,
    };
    let next = 0;
    let active = 0;
    this.ctx.clearMemory();

    const finish = (seq: number, finishReason: "stop" | "length") => {
      const s = slots[seq]!;
      slots[seq] = undefined;
      active--;
      this.ctx.removeSequence(seq);
      s.sampler?.free();
      const result: JobResult = { index: s.index, tokens: Int32Array.from(s.generated), finishReason };
      if (s.capture) result.activations = s.capture.finish();
      if (s.projection) result.projections = s.projection.finish();
      if (s.logprobs) result.continuationLogprobs = s.logprobs;
      if (s.top) result.top = s.top;
      hooks.onResult(result);
    };

    try {
      while (next < jobs.length || active > 0) {
        if (hooks.shouldAbort?.()) throw new PersonaError("E_ABORTED", "cancelled");
        for (let seq = 0; seq < nSeqMax && next < jobs.length; seq++) {
          if (slots[seq]) continue;
          const job = jobs[next]!;
          const capture = job.capture ? new CaptureAccumulator(nLayers, nEmbd, job.captureLayers) : null;
          const projection = job.probes ? new ProjectionAccumulator(nLayers, nEmbd, job.probes) : null;
          const sinks: RowSink[] = [];
          if (capture) sinks.push(capture);
          if (projection) sinks.push(projection);
          slots[seq] = {
            index: next++,
            job,
            input: concat(job.prompt, job.forced),
            fed: 0,
            generated: [],
            sampler: job.sampling ? this.makeSampler(job.sampling) : null,
            hooks: { ops: job.ops, sinks },
            capture,
            projection,
            wantAllRows: sinks.some((k) => k.mask[nLayers - 1] === 1),
            logprobs: job.logprobs?.continuation ? new Float64Array(job.forced?.length ?? 0) : null,
            top: undefined,
            pendingOutput: -1,
            pendingTarget: -1,
          };
          active++;
        }

        // Pack one batch: generated tokens first (one per job, cheap), then prompt chunks.
        const batch = this.ctx.batch;
        batch.clear();
        rows.nOutputs = 0;
        const hookSlots: (SlotHooks | undefined)[] = new Array(nSeqMax);
        const add = (seq: number, token: number, pos: number, cls: number, logits: boolean) => {
          const i = batch.add(token, pos, seq, logits);
          rows.owner[i] = seq;
          rows.cls[i] = cls;
          if (logits) rows.outputs[rows.nOutputs++] = i;
          return i;
        };
        for (let seq = 0; seq < nSeqMax; seq++) {
          const s = slots[seq];
          if (!s || s.fed < s.input.length) continue;
          // Feeding back the last sampled token.
          s.pendingOutput = add(seq, s.generated[s.generated.length - 1]!, s.input.length + s.generated.length - 1, ROW_RESPONSE, true);
          hookSlots[seq] = s.hooks;
        }
        for (let seq = 0; seq < nSeqMax && batch.size < nBatch; seq++) {
          const s = slots[seq];
          if (!s || s.fed >= s.input.length) continue;
          const promptLen = s.job.prompt.length;
          const wantAll = s.wantAllRows;
          const scoring = s.logprobs !== null;
          s.pendingOutput = -1;
          s.pendingTarget = -1;
          while (s.fed < s.input.length && batch.size < nBatch) {
            const p = s.fed++;
            const cls = p < promptLen - 1 ? ROW_PROMPT : p === promptLen - 1 ? ROW_LAST_PROMPT : ROW_RESPONSE;
            const predictsForced = scoring && p >= promptLen - 1 && p < s.input.length - 1;
            const needsNext = s.fed === s.input.length && (s.sampler !== null || (s.job.logprobs?.topK ?? 0) > 0);
            const i = add(seq, s.input[p]!, p, cls, wantAll || predictsForced || needsNext || p === promptLen - 1);
            if (predictsForced || p === promptLen - 1 || needsNext) this.collectLater(s, i, p - (promptLen - 1));
          }
          hookSlots[seq] = s.hooks;
        }
        rows.nTokens = batch.size;

        this.ctx.decode(rows, hookSlots);

        for (let seq = 0; seq < nSeqMax; seq++) {
          const s = slots[seq];
          if (!s) continue;
          this.consumeScores(s);
          if (s.fed < s.input.length) continue;
          if (!s.sampler) {
            finish(seq, "length");
            continue;
          }
          if (s.pendingOutput < 0) continue;
          const settings = s.job.sampling!;
          const suppress = s.generated.length < settings.minTokens ? this.eogTokens : null;
          const token = s.sampler.sample(s.pendingOutput, suppress);
          s.pendingOutput = -1;
          if (this.isEog(token)) {
            finish(seq, "stop");
            continue;
          }
          s.generated.push(token);
          hooks.onToken?.(s.index, token);
          if (s.generated.length >= settings.maxTokens) finish(seq, "length");
        }
      }
    } finally {
      for (const s of slots) s?.sampler?.free();
      this.ctx.clearMemory();
    }
  }

  private readonly pending = new Map<Slot, { batchIndex: number; target: number }[]>();

  /** Remembers a row whose logits are read after the decode (scoring or top-k). */
  private collectLater(s: Slot, batchIndex: number, forcedIndex: number): void {
    if (!s.logprobs && !(s.job.logprobs?.topK ?? 0)) {
      s.pendingOutput = batchIndex;
      return;
    }
    const list = this.pending.get(s) ?? [];
    list.push({ batchIndex, target: forcedIndex });
    this.pending.set(s, list);
    s.pendingOutput = batchIndex;
  }

  private consumeScores(s: Slot): void {
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
