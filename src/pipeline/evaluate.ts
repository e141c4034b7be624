/**
 * Trait expression score (spec §2): the mean judge score over a trait's evaluation questions ×
 * rollouts, with its spread and the mean coherence. `evaluateSettings` runs many steering settings
 * (and system prompts) in ONE batched generate call, each request carrying its own steering, and
 * judges each rollout as soon as it finishes, so judge latency overlaps generation.
 */
import type { Model } from "../engine/Model.js";
import { requestSeed } from "../engine/Model.js";
import { type ResolvedSteering, steeringToJson } from "../engine/steering.js";
import type { ChatMessage } from "../engine/types.js";
import { PersonaError } from "../errors.js";
import type { Judge } from "../judge/types.js";
import type { TraitDefinition } from "../traits/format.js";
import type { ShardRunner, ShardStats } from "../queue/runner.js";
import { type PlannedRollout, runJudgedRollouts } from "./rollout-shards.js";
import { fingerprintModel, hashOf, RunDir } from "./rundir.js";

/** Summary of judge scores; null scores are left out of mean and std and counted in `nulls`. */
export interface ScoreStats {
  /** null when no score was given. */
  mean: number | null;
  /** Sample standard deviation (n − 1); 0 for one score, null for none. */
  std: number | null;
  /** Scores that count. */
  n: number;
  /** Scores the judge could not give (refusal, too little mass on numbers). */
  nulls: number;
}

export interface EvalSample {
  question: string;
  answer: string;
  trait: number | null;
  coherence: number | null;
}

export interface TraitEvaluation {
  trait: string;
  traitScore: ScoreStats;
  coherence: ScoreStats;
  samples: EvalSample[];
}

/** One steering setting of a batched evaluation. */
export interface EvalSetting {
  /** Names the setting in the result (e.g. `layer:coef`). */
  key: string;
  /** Defaults to no steering. */
  steering?: ResolvedSteering;
  /** System prompt, e.g. a pos instruction for "−coef under a pos prompt". Defaults to none. */
  system?: string;
}

export interface EvalProgress {
  /** Rollouts generated so far. */
  generated: number;
  /** Rollouts with both scores. */
  judged: number;
  total: number;
}

export interface EvaluateCommonOptions {
  trait: TraitDefinition;
  judge: Judge;
  /** Questions to ask. Defaults to the trait's evaluation questions. */
  questions?: readonly string[];
  /** Rollouts per question. Defaults to 10. */
  samplesPerQuestion?: number;
  /** Defaults to 1. */
  temperature?: number;
  /** Defaults to 1000, as in the reference. */
  maxTokens?: number;
  /**
   * Base seed. Rollout k of question q uses the same seed under every setting (common random
   * numbers), so settings differ only by their steering and a batch reproduces a lone run.
   * Defaults to 0.
   */
  seed?: number;
  /**
   * Exact numerics (F32 KV cache, no flash attention): another batch (size, shared prefixes) moves
   * values by ~1e-6, not ~1e-3, so replies hardly ever change with it. Defaults to false.
   */
  exact?: boolean;
  /** Sequences decoded together. Defaults to the engine's default. */
  parallel?: number;
  /** Judge calls in flight at once. Defaults to 16. */
  judgeConcurrency?: number;
  signal?: AbortSignal;
  onProgress?(p: EvalProgress): void;
  /** Where the rollouts run (in shards of `shardRequests`): here (default) or on a queue's workers. */
  runner?: ShardRunner;
  /** The judge's spec, what a queue's workers open (defaults to the judge's id). */
  judgeSpec?: string;
  /** Rollouts per shard (one generate call each; batches change non-exact replies). Defaults to all in one. */
  shardRequests?: number;
  /** The queue's shard counts, once done. */
  onShardStats?(stats: ShardStats): void;
  /** Rollouts an earlier run stored, by index: a shard whose every rollout is here is not run again. */
  storedSamples?: ReadonlyMap<number, EvalSample>;
  /** Each merged shard's samples (index of its first rollout), in shard order, before the judge check. */
  onShardSamples?(start: number, samples: EvalSample[]): Promise<void> | void;
}

export interface EvaluateTraitOptions extends EvaluateCommonOptions {
  /** Defaults to no steering. */
  steering?: ResolvedSteering;
  /** Defaults to no system prompt. */
  system?: string;
}

export interface EvaluateSettingsOptions extends EvaluateCommonOptions {
  settings: readonly EvalSetting[];
  /**
   * Settings an earlier run stored: not evaluated again unless they share a shard with one that
   * is not (then their replies are regenerated and dropped); left out of the result.
   */
  storedSetting?(key: string): boolean;
  /** Each setting as soon as all its rollouts are in, in setting order (before the judge check). */
  onSetting?(e: SettingEvaluation): Promise<void> | void;
}

export interface SettingEvaluation extends TraitEvaluation {
  key: string;
}

/** Mean, sample std and counts over the non-null scores. */
export function summarize(scores: readonly (number | null)[]): ScoreStats {
  const xs = scores.filter((s): s is number => s !== null);
  const n = xs.length;
  const nulls = scores.length - n;
  if (n === 0) return { mean: null, std: null, n, nulls };
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const ss = xs.reduce((a, x) => a + (x - mean) ** 2, 0);
  return { mean, std: n > 1 ? Math.sqrt(ss / (n - 1)) : 0, n, nulls };
}

export async function evaluateTrait(model: Model, opts: EvaluateTraitOptions): Promise<TraitEvaluation> {
  const { steering, system, ...common } = opts;
  const [only] = await evaluateSettings(model, { ...common, settings: [{ key: "", steering, system }] });
  const { key: _key, ...evaluation } = only!;
  return evaluation;
}

export interface EvaluateRunOptions extends EvaluateTraitOptions {
  /** Run directory: created, or resumed when its configuration matches (see RunDir). */
  out: string;
  /** Set aside a run with another configuration instead of refusing. Defaults to false. */
  restart?: boolean;
  /** Called before any work when an earlier run is resumed. */
  onResume?(runDir: string): void;
}

/**
 * `evaluateTrait` in a run directory: the configuration (model fingerprint, trait, rubric,
 * questions, steering, system prompt, judge spec, sampling, shard size) is hashed into run.json and
 * each merged shard's samples are appended to samples.jsonl, so a killed evaluation, local or on
 * a queue, resumes without redoing finished shards and ends with the result a fresh run gives.
 */
export async function evaluateTraitRun(model: Model, opts: EvaluateRunOptions): Promise<{ evaluation: TraitEvaluation; resumed: boolean }> {
  const { out, restart, onResume, ...evaluate } = opts;
  const config = {
    model: await fingerprintModel(model.info),
    trait: evaluate.trait.name,
    rubric: hashOf(evaluate.trait.eval.eval_prompt),
    questions: hashOf(evaluate.questions ?? evaluate.trait.eval.questions),
    steering: evaluate.steering ? hashOf(steeringToJson(evaluate.steering)) : null,
    system: evaluate.system ?? null,
    judge: evaluate.judgeSpec ?? evaluate.judge.id,
    samples: evaluate.samplesPerQuestion ?? 10,
    temperature: evaluate.temperature ?? 1,
    max_tokens: evaluate.maxTokens ?? 1000,
    seed: evaluate.seed ?? 0,
    exact: evaluate.exact ?? false,
    // Shards are batches: another size changes non-exact replies and where a resumed run cuts.
    shard: evaluate.shardRequests ?? null,
  };
  const run = await RunDir.open(out, "eval", config, { restart });
  if (run.resumed) onResume?.(out);
  const records = await run.records<EvalSample[]>("samples.jsonl");
  try {
    const storedSamples = new Map<number, EvalSample>();
    for (const [key, samples] of records.entries()) samples.forEach((x, i) => storedSamples.set(Number(key) + i, x));
    const evaluation = await evaluateTrait(model, {
      ...evaluate,
      storedSamples,
      onShardSamples: async (start, samples) => {
        await records.append(String(start), samples);
        await evaluate.onShardSamples?.(start, samples);
      },
    });
    return { evaluation, resumed: run.resumed };
  } finally {
    await records.close();
  }
}

/**
 * A judge that scored none of `n` replies (every trait and coherence score null) cannot judge
 * them: that is a failure, not an empty result.
 */
export function judgeScoredNothing(judgeId: string, n: number): PersonaError {
  const local = judgeId.startsWith("local:")
    ? " A local judge needs an instruction-following model that answers a 0-100 rating prompt with a number (a 7B-or-larger instruct GGUF, e.g. Qwen2.5-7B-Instruct); the demo model cannot judge."
    : "";
  return new PersonaError("E_JUDGE", `the judge ${judgeId} gave no score to any of the ${n} replies (every trait and coherence score is null), so it cannot judge them.${local}`);
}

export async function evaluateSettings(model: Model, opts: EvaluateSettingsOptions): Promise<SettingEvaluation[]> {
  const questions = opts.questions ?? opts.trait.eval.questions;
  const perQuestion = opts.samplesPerQuestion ?? 10;
  const concurrency = opts.judgeConcurrency ?? 16;
  if (!Number.isInteger(perQuestion) || perQuestion < 1) {
    throw new PersonaError("E_BAD_INPUT", `samples per question must be a positive integer, got ${perQuestion}`);
  }
  if (questions.length === 0) throw new PersonaError("E_BAD_INPUT", `trait ${opts.trait.name} has no evaluation questions`);
  if (opts.settings.length === 0) return [];
  const keys = new Set(opts.settings.map((s) => s.key));
  if (keys.size !== opts.settings.length) throw new PersonaError("E_BAD_INPUT", "evaluation settings need distinct keys");

  const perSetting = questions.length * perQuestion;
  const baseSeed = opts.seed ?? 0;
  const requests: PlannedRollout[] = [];
  for (const setting of opts.settings) {
    for (const [q, question] of questions.entries()) {
      const messages: ChatMessage[] = setting.system === undefined ? [] : [{ role: "system", content: setting.system }];
      messages.push({ role: "user", content: question });
      for (let k = 0; k < perQuestion; k++) {
        requests.push({ key: `${setting.key}/${q}/${k}`, messages, seed: requestSeed(baseSeed, q * perQuestion + k), ...(setting.steering && { steering: setting.steering }) });
      }
    }
  }

  const total = requests.length;
  const samples: EvalSample[] = new Array(total);
  for (const [i, sample] of opts.storedSamples ?? []) samples[i] = sample;
  const storedCount = opts.storedSamples?.size ?? 0;
  const alreadyStored = opts.settings.filter((x) => opts.storedSetting?.(x.key)).length * perSetting + storedCount;
  // Counts stored rollouts once, up front: the shards hand back only the others.
  const progress: EvalProgress = { generated: alreadyStored, judged: alreadyStored, total };
  const report = () => opts.onProgress?.({ ...progress });
  report();
  const questionOf = (index: number) => questions[Math.floor((index % perSetting) / perQuestion)]!;
  const evaluation = (s: number): SettingEvaluation => {
    const mine = samples.slice(s * perSetting, (s + 1) * perSetting);
    return {
      key: opts.settings[s]!.key,
      trait: opts.trait.name,
      traitScore: summarize(mine.map((x) => x.trait)),
      coherence: summarize(mine.map((x) => x.coherence)),
      samples: mine,
    };
  };
  let merged = 0;
  let settingsDone = 0;
  let scoredAny = [...(opts.storedSamples?.values() ?? [])].some((x) => x.trait !== null || x.coherence !== null);
  let ran = 0;
  const isStored = (s: number) => opts.storedSetting?.(opts.settings[s]!.key) ?? false;
  const flushSettings = async () => {
    for (; settingsDone < opts.settings.length && (settingsDone + 1) * perSetting <= merged; settingsDone++) {
      if (!isStored(settingsDone)) await opts.onSetting?.(evaluation(settingsDone));
    }
  };
  const temperature = opts.temperature ?? 1;
  const maxTokens = opts.maxTokens ?? 1000;
  const shardSize = opts.shardRequests ?? total;
  const rubric = { trait: opts.trait.name, rubric: opts.trait.eval.eval_prompt };
  const stats = await runJudgedRollouts(model, requests, {
    name: "eval",
    judge: opts.judge,
    judgeSpec: opts.judgeSpec ?? opts.judge.id,
    rubric,
    sampling: { temperature, maxTokens, exact: opts.exact, parallel: opts.parallel },
    judgeConcurrency: concurrency,
    shardSize,
    runner: opts.runner,
    signal: opts.signal,
    onRollout: () => {
      progress.generated++;
      report();
    },
    onReply: () => {
      progress.judged++;
      report();
    },
    stored: (opts.storedSetting || opts.storedSamples) && ((i) => isStored(Math.floor(i / perSetting)) || (opts.storedSamples?.has(i) ?? false)),
    onShard: async (start, replies) => {
      for (const [i, r] of replies.entries()) {
        if (!r) continue;
        ran++;
        samples[start + i] = { question: questionOf(start + i), answer: r.text, trait: r.trait, coherence: r.coherence };
      }
      await opts.onShardSamples?.(start, samples.slice(start, start + replies.length));
      merged = start + replies.length;
      scoredAny ||= replies.some((r) => r !== undefined && (r.trait !== null || r.coherence !== null));
      // Held back until the judge has scored something: a judge that scores nothing fails the run below.
      if (scoredAny) await flushSettings();
    },
  });
  opts.onShardStats?.(stats);
  if (!scoredAny && ran + storedCount > 0) throw judgeScoredNothing(opts.judge.id, ran + storedCount);
  await flushSettings();

  return opts.settings.flatMap((_, s) => (isStored(s) ? [] : [evaluation(s)]));
}
