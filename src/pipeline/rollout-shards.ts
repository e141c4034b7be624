/**
 * Judged rollouts as shards, the one work unit that extract, eval, sweep and monitor send to a
 * queue: a shard is a run of consecutive requests (a conversation, its seed, its steering), and
 * its result is each reply with its trait and coherence scores, in request order. The local run
 * goes through the same shards, one batched generate call each, so the batches, and therefore the
 * replies, are the same whether a shard runs here or on a `persona worker`.
 */
import type { Model } from "../engine/Model.js";
import { type ResolvedSteering, type SteeringOpJson, steeringFromJson, steeringToJson } from "../engine/steering.js";
import type { ChatMessage, GenerateRequest } from "../engine/types.js";
import { PersonaError } from "../errors.js";
import type { Judge } from "../judge/types.js";
import type { ModelRef } from "../queue/models.js";
import { LOCAL_RUNNER, type Shard, type ShardRunner, type ShardStats } from "../queue/runner.js";
import type { ShardContext, ShardHandler } from "../queue/worker.js";
import { generateAndJudge, type Judgement, type TraitRubric } from "./judging.js";
import { fingerprintModel, hashOf } from "./rundir.js";

export const ROLLOUT_SHARD_KIND = "rollouts";

/** One rollout to generate and judge. The judge is shown the last user message as the question. */
export interface PlannedRollout {
  /** Names the rollout within its run (e.g. `pos/0/1/2`); a shard is named by its rollouts' keys. */
  key: string;
  messages: ChatMessage[];
  seed: number;
  steering?: ResolvedSteering;
}

export interface RolloutSampling {
  temperature: number;
  topP?: number;
  maxTokens: number;
  /**
   * F32 KV cache, no flash attention: a reply's batch changes it only by float rounding (≤ 2.3e-6 on
   * activations), which flipped 0 of 2240 sampled demo-model replies.
   */
  exact?: boolean;
  parallel?: number;
}

export interface GeneratedReply {
  text: string;
  /** Generated tokens. */
  tokens: number;
  finish: "stop" | "length";
}

export interface JudgedReply extends GeneratedReply, Judgement {}

/** What every shard of a run carries besides its requests. */
export interface RolloutShardCommon {
  model: ModelRef;
  /** The `--judge` spec, resolved again on the worker. */
  judge: string;
  rubric: TraitRubric;
  sampling: RolloutSampling;
  judgeConcurrency: number;
}

export interface RolloutShardData {
  requests: { messages: ChatMessage[]; seed: number; steering?: number }[];
  /** The distinct steerings of the shard's requests (a request names one by index). */
  steerings: SteeringOpJson[][];
}

export interface JudgedRolloutsOptions {
  /** The command (job ids start with it). */
  name: string;
  judge: Judge;
  /** How the worker opens the same judge (see refuseUntravelledJudge). */
  judgeSpec: string;
  rubric: TraitRubric;
  sampling: RolloutSampling;
  judgeConcurrency: number;
  /** Requests per shard, and so per generate call. */
  shardSize: number;
  /**
   * Requests already stored by an earlier run, never handed back again. Shards stay where a fresh
   * run cuts them, and a shard whose every request is stored is skipped. With exact numerics a
   * reply's batch changes it only by float rounding, so a shard runs only its missing requests
   * (a resumed run matches an uninterrupted one but for a sampled token within ~1e-6 of a sampling
   * boundary: 0 of 2240 demo-model replies differed); otherwise it
   * runs whole, so its batch (and so its new replies) is a fresh run's, and the stored requests'
   * replies are dropped.
   */
  stored?(index: number): boolean;
  runner?: ShardRunner;
  signal?: AbortSignal;
  /**
   * Every reply once, generated and then judged: here as soon as it is (so a killed run, or one
   * whose judge fails, keeps what it paid for), from a queue when its shard is merged, in order.
   */
  onRollout?(index: number, reply: GeneratedReply): Promise<void> | void;
  onReply?(index: number, reply: JudgedReply): Promise<void> | void;
  /**
   * A finished shard, in shard order, after its replies: the index of its first request and a
   * reply per request of the shard, undefined for the stored ones.
   */
  onShard?(start: number, replies: (JudgedReply | undefined)[]): Promise<void> | void;
}

/** How shards name `model` to workers; only a queue needs the content hash (it reads the file). */
export async function shardModelRef(model: Model, runner: ShardRunner | undefined): Promise<ModelRef> {
  return { hash: runner === undefined || runner === LOCAL_RUNNER ? "" : await fingerprintModel(model.info), name: model.info.name };
}

function lastUserMessage(messages: readonly ChatMessage[]): string {
  return [...messages].reverse().find((m) => m.role === "user")?.content ?? messages[messages.length - 1]?.content ?? "";
}

/** Generates and judges `requests` shard by shard, through `runner` (default: here). */
export async function runJudgedRollouts(model: Model, requests: readonly PlannedRollout[], opts: JudgedRolloutsOptions): Promise<ShardStats> {
  if (!Number.isInteger(opts.shardSize) || opts.shardSize < 1) throw new PersonaError("E_BAD_INPUT", `shard size must be a positive integer, got ${opts.shardSize}`);
  const runner = opts.runner ?? LOCAL_RUNNER;
  const common: RolloutShardCommon = {
    model: await shardModelRef(model, runner),
    judge: opts.judgeSpec,
    rubric: opts.rubric,
    sampling: opts.sampling,
    judgeConcurrency: opts.judgeConcurrency,
  };
  // Where each shard starts in `requests`, how many requests it spans, which of them it runs and
  // which of those are new (not stored), by key (merging) and by data (running here).
  interface Planned {
    start: number;
    span: number;
    indices: number[];
    fresh: boolean[];
  }
  const plans = new Map<string, Planned>();
  const dataPlans = new WeakMap<RolloutShardData, Planned>();
  // Shards run here hand their replies over as they are judged, not again when merged.
  const deliveredHere = new Set<number>();
  async function* shards(): AsyncGenerator<Shard<RolloutShardData>> {
    for (let start = 0; start < requests.length; start += opts.shardSize) {
      const span = Math.min(opts.shardSize, requests.length - start);
      const all = Array.from({ length: span }, (_, i) => start + i);
      const missing = all.filter((i) => !opts.stored?.(i));
      if (missing.length === 0) continue;
      const indices = opts.sampling.exact ? missing : all;
      const isMissing = new Set(missing);
      const plan: Planned = { start, span, indices, fresh: indices.map((i) => isMissing.has(i)) };
      const part = plan.indices.map((i) => requests[i]!);
      const distinct: ResolvedSteering[] = [];
      const data: RolloutShardData = {
        requests: part.map((r) => {
          if (r.steering === undefined || r.steering.length === 0) return { messages: r.messages, seed: r.seed };
          let at = distinct.indexOf(r.steering);
          if (at < 0) at = distinct.push(r.steering) - 1;
          return { messages: r.messages, seed: r.seed, steering: at };
        }),
        steerings: distinct.map(steeringToJson),
      };
      // Named by content, not position (a resumed run's remaining rollouts fall into other
      // positions): the same key is the same work, so a queue may hand back an earlier run's result.
      const key = `${part[0]!.key}+${part.length}.${hashOf(data)}`;
      plans.set(key, plan);
      dataPlans.set(data, plan);
      yield { key, data };
    }
  }
  // The request a shard's i-th reply answers; none for a stored one's (in a shard run whole).
  const target = (plan: Planned, i: number): number | undefined => (plan.fresh[i] ? plan.indices[i] : undefined);
  return runner.run({
    kind: ROLLOUT_SHARD_KIND,
    runId: `${opts.name}-${hashOf(common)}`,
    common,
    shards: shards(),
    local: async (data) => {
      const plan = dataPlans.get(data)!;
      const replies = await judgedShard(model, opts.judge, common, data, opts.signal, {
        onRollout: (i, r) => {
          const at = target(plan, i);
          if (at !== undefined) return opts.onRollout?.(at, r);
        },
        onReply: (i, r) => {
          const at = target(plan, i);
          if (at !== undefined) return opts.onReply?.(at, r);
        },
      });
      deliveredHere.add(plan.start);
      return replies;
    },
    onResult: async (key, replies: JudgedReply[]) => {
      const plan = plans.get(key)!;
      const here = deliveredHere.delete(plan.start);
      const byPosition: (JudgedReply | undefined)[] = new Array(plan.span).fill(undefined);
      for (const [i, r] of replies.entries()) {
        const at = target(plan, i);
        if (at === undefined) continue;
        byPosition[at - plan.start] = r;
        if (here) continue;
        await opts.onRollout?.(at, { text: r.text, tokens: r.tokens, finish: r.finish });
        await opts.onReply?.(at, r);
      }
      await opts.onShard?.(plan.start, byPosition);
    },
    signal: opts.signal,
  });
}

/** One shard's work, the same here and on a worker. */
async function judgedShard(
  model: Model,
  judge: Judge,
  common: RolloutShardCommon,
  data: RolloutShardData,
  signal: AbortSignal | undefined,
  hooks: { onRollout?(index: number, r: GeneratedReply): Promise<void> | void; onReply?(index: number, r: JudgedReply): Promise<void> | void } = {},
): Promise<JudgedReply[]> {
  const steerings = data.steerings.map((s) => steeringFromJson(s, model.info));
  const prompts = new Map<string, Int32Array>();
  const requests: GenerateRequest[] = [];
  for (const r of data.requests) {
    const id = JSON.stringify(r.messages);
    let prompt = prompts.get(id);
    if (!prompt) {
      prompt = await model.encodeChat(r.messages);
      prompts.set(id, prompt);
    }
    requests.push({ prompt, seed: r.seed, ...(r.steering !== undefined && { steering: steerings[r.steering]! }) });
  }
  const replies: JudgedReply[] = new Array(requests.length);
  const generated: GeneratedReply[] = new Array(requests.length);
  // Rollout hooks run in order with the judgements (which wait for them).
  const stored: Promise<void>[] = new Array(requests.length);
  const { sampling } = common;
  try {
    await generateAndJudge(model, requests, {
      temperature: sampling.temperature,
      ...(sampling.topP !== undefined && { topP: sampling.topP }),
      maxTokens: sampling.maxTokens,
      exact: sampling.exact,
      parallel: sampling.parallel === undefined ? undefined : Math.min(sampling.parallel, requests.length),
      signal,
      judge,
      rubric: common.rubric,
      judgeConcurrency: common.judgeConcurrency,
      questionOf: (i) => lastUserMessage(data.requests[i]!.messages),
      onGenerated: (r) => {
        generated[r.index] = { text: r.text, tokens: r.tokens.length, finish: r.finishReason };
        stored[r.index] = Promise.resolve(hooks.onRollout?.(r.index, generated[r.index]!));
        // Awaited by its judgement (or below); a failure reaches the caller through that await.
        stored[r.index]!.catch(() => undefined);
      },
      onJudged: async (i, _text, j) => {
        await stored[i];
        replies[i] = { ...generated[i]!, trait: j.trait, coherence: j.coherence };
        await hooks.onReply?.(i, replies[i]);
      },
    });
  } finally {
    // Nothing is written after the shard ends, even when its judge failed.
    await Promise.allSettled(stored);
  }
  return replies;
}

/** A worker's handler for rollout shards; `judgeOf` opens (and keeps) the judge a spec names. */
export function rolloutShardHandler(judgeOf: (spec: string) => Promise<Judge>): ShardHandler {
  const handler = async (common: RolloutShardCommon, data: RolloutShardData, ctx: ShardContext): Promise<JudgedReply[]> =>
    judgedShard(await ctx.model(common.model), await judgeOf(common.judge), common, data, ctx.signal);
  return handler as ShardHandler;
}

/**
 * A judge spec a worker can open the same way: a `local:` judge names a GGUF file on this
 * machine, which workers may not have (and would load beside their model), so it is refused.
 */
export function refuseUntravelledJudge(spec: string): void {
  if (/^\s*local:/i.test(spec)) {
    throw new PersonaError(
      "E_BAD_INPUT",
      `--queue cannot send the judge ${spec} to workers (a local: judge is a model file on this machine); use demo, an API judge (openai:, anthropic:) or an OpenAI-compatible server URL the workers can reach`,
    );
  }
}
