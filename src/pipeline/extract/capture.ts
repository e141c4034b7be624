/**
 * The extraction forward passes (spec §2): each kept sample is its chat-templated system+user
 * prompt followed by the reply, and its three reductions stream into running sums, one per
 * polarity and reduction, so memory does not grow with the number of samples. The samples go in
 * chunks (shards, on a queue's workers or here): within a chunk they are added in input order
 * whatever order they finish in, and the chunks' sums are merged in chunk order, so the float64
 * sums, and the vectors, are the same bits wherever and however they ran.
 */
import type { SampleActivations } from "../../engine/capture.js";
import type { Model } from "../../engine/Model.js";
import type { ChatMessage } from "../../engine/types.js";
import { PersonaError } from "../../errors.js";
import type { ModelRef } from "../../queue/models.js";
import { LOCAL_RUNNER, type Shard, type ShardRunner, type ShardStats } from "../../queue/runner.js";
import type { ShardContext, ShardHandler } from "../../queue/worker.js";
import type { Polarity } from "../../traits/format.js";
import { RunningMean } from "../../vectors/math.js";
import { shardModelRef } from "../rollout-shards.js";
import { hashOf } from "../rundir.js";

export const CAPTURE_SHARD_KIND = "capture";

export interface CaptureItem {
  polarity: Polarity;
  /** `[system, user]` of the rollout. */
  messages: ChatMessage[];
  /** The rollout's reply. */
  response: string;
}

export interface ReductionMeans {
  responseAvg: RunningMean;
  promptAvg: RunningMean;
  promptLast: RunningMean;
}

const REDUCTIONS = ["responseAvg", "promptAvg", "promptLast"] as const;
const POLARITIES = ["pos", "neg"] as const;

/** A chunk's sums as they travel: per polarity its count and each reduction's float64 sum, base64. */
type ChunkSums = Record<Polarity, { n: number } & Record<(typeof REDUCTIONS)[number], string>>;

export interface CaptureMeansOptions {
  /** Samples per `capture` call and per shard; bounds the token ids held at once. Defaults to 64. */
  chunk?: number;
  /** Where the chunks run: here (default) or on a queue's workers. */
  runner?: ShardRunner;
  /** The queue's shard counts, once done. */
  onShardStats?(stats: ShardStats): void;
  /** Called as samples are added (here: each; from a queue: each merged chunk). */
  onSample?(done: number, total: number): void;
  /** Each sample's activations, by its index in `items`; only here (a queue's workers send sums). */
  onActivations?(index: number, acts: SampleActivations): void;
  signal?: AbortSignal;
}

function newMeans(size: number): ReductionMeans {
  return { responseAvg: new RunningMean(size), promptAvg: new RunningMean(size), promptLast: new RunningMean(size) };
}

export async function captureMeans(model: Model, items: readonly CaptureItem[], opts: CaptureMeansOptions = {}): Promise<Record<Polarity, ReductionMeans>> {
  if (opts.onActivations && opts.runner) throw new PersonaError("E_INTERNAL", "per-sample activations are only captured here, not on a runner");
  const size = (model.info.nLayer + 1) * model.info.nEmbd;
  const means: Record<Polarity, ReductionMeans> = { pos: newMeans(size), neg: newMeans(size) };
  const chunk = opts.chunk ?? 64;
  let added = 0;
  let merged = 0;
  const report = (done: number) => {
    added = Math.max(added, done);
    opts.onSample?.(added, items.length);
  };
  async function* shards(): AsyncGenerator<Shard<CaptureItem[]>> {
    for (let start = 0; start < items.length; start += chunk) {
      const part = items.slice(start, start + chunk);
      yield { key: `${start}+${part.length}.${hashOf(part)}`, data: part };
    }
  }
  const common = { model: await shardModelRef(model, opts.runner) };
  const stats = await (opts.runner ?? LOCAL_RUNNER).run({
    kind: CAPTURE_SHARD_KIND,
    runId: `extract-capture-${hashOf(common)}`,
    common,
    shards: shards(),
    local: (part) => {
      const first = items.indexOf(part[0]!);
      const onActivations = opts.onActivations;
      return chunkSums(model, part, opts.signal, (i) => report(merged + i), onActivations && ((i, a) => onActivations(first + i, a)));
    },
    onResult: async (_key, sums: ChunkSums) => {
      for (const p of POLARITIES) {
        for (const r of REDUCTIONS) {
          const b = Buffer.from(sums[p][r], "base64");
          means[p][r].merge(new Float64Array(b.buffer, b.byteOffset, b.byteLength / 8), sums[p].n);
        }
        merged += sums[p].n;
      }
      report(merged);
    },
    signal: opts.signal,
  });
  opts.onShardStats?.(stats);
  return means;
}

/** One chunk's sums: its samples added in input order, whatever order they finish in. */
async function chunkSums(
  model: Model,
  part: readonly CaptureItem[],
  signal: AbortSignal | undefined,
  onSample?: (done: number) => void,
  onActivations?: (i: number, acts: SampleActivations) => void,
): Promise<ChunkSums> {
  const size = (model.info.nLayer + 1) * model.info.nEmbd;
  const means: Record<Polarity, ReductionMeans> = { pos: newMeans(size), neg: newMeans(size) };
  const samples = [];
  for (const it of part) samples.push(await model.encodeConversation([...it.messages, { role: "assistant", content: it.response }]));
  // Out-of-order finishes wait here; at most the samples in flight at once.
  const waiting = new Map<number, SampleActivations>();
  let next = 0;
  await model.capture(samples, {
    signal,
    onSample: (i, a) => {
      waiting.set(i, a);
      for (let w = waiting.get(next); w; w = waiting.get(next)) {
        waiting.delete(next);
        const m = means[part[next]!.polarity];
        for (const r of REDUCTIONS) m[r].add(w[r]);
        onActivations?.(next, w);
        next++;
        onSample?.(next);
      }
    },
  });
  const out = {} as ChunkSums;
  for (const p of POLARITIES) {
    const states = REDUCTIONS.map((r) => means[p][r].state());
    out[p] = { n: states[0]!.n, responseAvg: "", promptAvg: "", promptLast: "" };
    REDUCTIONS.forEach((r, k) => (out[p][r] = Buffer.from(states[k]!.sum.buffer).toString("base64")));
  }
  return out;
}

/** A worker's handler for capture shards: the same chunk sums as a local run's. */
export const captureShard = (async (common: { model: ModelRef }, part: CaptureItem[], ctx: ShardContext): Promise<ChunkSums> =>
  chunkSums(await ctx.model(common.model), part, ctx.signal)) as ShardHandler;
