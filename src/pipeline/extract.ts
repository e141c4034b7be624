/**
 * Persona-vector extraction (spec §2): rollouts under pos and neg system prompts, judged for the
 * trait and for coherence, filtered pair by pair, then one forward pass per kept sample whose
 * residual means give mean(pos) − mean(neg) at every layer for three reductions.
 *
 * Everything runs in a resumable run directory (spec §3):
 *   run.json            config (model fingerprint, trait hash, judge, sampling, thresholds)
 *   rollouts.jsonl      `pos/i/j/r` → {text, tokens, finish}, appended as each rollout finishes
 *   judgements.jsonl    `pos/i/j/r` → {trait, coherence}, appended once the rollout is stored
 *   judge-cache.jsonl   every judge answer, so an interrupted judgement is not paid for twice
 *   vectors.safetensors the vectors (atomic)
 *   summary.json        counts, mean scores, timings (atomic, written last: the run is complete)
 * A process killed at any moment and re-run with the same options redoes no stored rollout or
 * judgement; the capture is cheap and deterministic, so it is simply redone.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Model } from "../engine/Model.js";
import type { ModelInfo } from "../engine/types.js";
import { PersonaError } from "../errors.js";
import { CachedJudge } from "../judge/cache.js";
import type { Judge } from "../judge/types.js";
import type { Polarity, TraitDefinition } from "../traits/format.js";
import { layerMatrix, type PersonaVectors, readVectors, writeVectors } from "../vectors/format.js";
import { MAX_SPAN_K, type SpanMatrix } from "../vectors/span.js";
import { meanDiff } from "../vectors/math.js";
import { captureMeans, type CaptureItem, type CaptureMeansOptions, type ReductionMeans } from "./extract/capture.js";
import { promptLastSpanCollector } from "./extract/span.js";
import { Serial } from "../store/serial.js";
import { JudgePool, type Judgement } from "./judging.js";
import { rolloutItems, rolloutMessages, rolloutRows, type RolloutRecord } from "./extract/rollouts.js";
import type { ShardRunner, ShardStats } from "../queue/runner.js";
import { runJudgedRollouts } from "./rollout-shards.js";
import { filterPairs, type FilterCounts } from "./filter.js";
import { judgeScoredNothing } from "./evaluate.js";
import { fingerprintFile, fingerprintModel, hashOf, type RecordLog, RunDir } from "./rundir.js";

export type ExtractStage = "rollouts" | "judging" | "capture";

export interface ExtractOptions {
  trait: TraitDefinition;
  /** Scores trait and coherence; wrapped in a cache inside the run directory. */
  judge: Judge;
  /** Run directory; created, or resumed when it holds a run with the same configuration. */
  runDir: string;
  /** Rollouts per pair × question per polarity. Defaults to 10. */
  rollouts?: number;
  /** Defaults to 1. */
  temperature?: number;
  /** Defaults to 1. */
  topP?: number;
  /** Most new tokens per rollout. Defaults to 1000. */
  maxTokens?: number;
  /** Base seed; each rollout's seed derives from it and the rollout's key. Defaults to 0. */
  seed?: number;
  /** pos trait score must be ≥ this and neg < this. Defaults to 50. */
  traitThreshold?: number;
  /** Both coherence scores must be ≥ this. Defaults to 50. */
  coherenceThreshold?: number;
  /** Sequences generated together. Defaults to the engine's (up to 16). */
  parallel?: number;
  /** Judge calls in flight at once. Defaults to 8. */
  judgeConcurrency?: number;
  /**
   * Also store `prompt_last_span`: per layer the top K directions of the kept pairs' last-prompt-token
   * differences, which CAFT ablates whole (`--steer FILE#prompt_last_span:1-N:1:all:ablate`). Not part
   * of the run's configuration: a finished run asked for a span it lacks redoes only the capture.
   */
  span?: number;
  /** Set aside a run directory with another configuration instead of refusing it. Defaults to false. */
  restart?: boolean;
  /**
   * Where rollouts are generated and judged, in shards of `shardRollouts`, and the kept samples'
   * forward passes taken, in shards of at most 64: here (default) or on a queue's workers.
   */
  runner?: ShardRunner;
  /** The judge's spec, what a queue's workers open. Defaults to the judge's id. */
  judgeSpec?: string;
  /** Rollouts per shard and per generate call (exact numerics: results do not depend on it). Defaults to 256. */
  shardRollouts?: number;
  /** The queue's shard counts, once per stage (rollouts, then capture). */
  onShardStats?(stats: ShardStats): void;
  /** Items done per stage; rollouts and judging overlap. */
  onProgress?(stage: ExtractStage, done: number, total: number): void;
  /** Called once when the run directory already held this run: what was found there. */
  onResume?(found: ResumeState): void;
  signal?: AbortSignal;
}

export interface ResumeState {
  /** The run had finished: its stored result is returned and nothing is redone. */
  complete: boolean;
  /** Rollouts and judgements already stored, of `total` each (0 when complete). */
  rollouts: number;
  judgements: number;
  total: number;
}

export interface ExtractCounts extends FilterCounts {
  /** Kept by the score filter but dropped because a reply was empty (nothing to average). */
  emptyResponse: number;
}

export interface PolarityScores {
  /** Mean non-null trait score over all judged rollouts, null when none. */
  trait: number | null;
  /** Mean non-null coherence score, null when none. */
  coherence: number | null;
  rollouts: number;
}

export interface ExtractTimings {
  /** Wall time of generation in this process (0 when every rollout was stored). */
  rolloutsSeconds: number;
  /** Rollouts generated in this process. */
  newRollouts: number;
  /** Rollouts judged in this process (judge-cache hits included). */
  newJudgements: number;
  judgingSeconds: number;
  captureSeconds: number;
  totalSeconds: number;
}

export interface ExtractResult {
  vectorsPath: string;
  summaryPath: string;
  runDir: string;
  counts: ExtractCounts;
  scores: Record<Polarity, PolarityScores>;
  timings: ExtractTimings;
  judge: string;
  /** True when the directory already held part (or all) of this run. */
  resumed: boolean;
}

/** `summary.json`: snake_case, like the vectors metadata, for other tools. */
interface SummaryFile {
  trait: string;
  judge: string;
  config_hash: string;
  counts: Record<string, number>;
  thresholds: { trait: number; coherence: number };
  scores: Record<Polarity, { trait: number | null; coherence: number | null; rollouts: number }>;
  timings: Record<string, number>;
  vectors: string;
}

const VECTORS = "vectors.safetensors";
const SUMMARY = "summary.json";
const JUDGE_CACHE = "judge-cache.jsonl";

function checkInt(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new PersonaError("E_BAD_INPUT", `${name} must be an integer ≥ ${min}, got ${v}`);
}

function checkNumber(name: string, v: number): void {
  if (!Number.isFinite(v)) throw new PersonaError("E_BAD_INPUT", `${name} must be a finite number, got ${v}`);
}

interface Settings {
  n: number;
  sampling: { temperature: number; topP: number; maxTokens: number };
  seed: number;
  thresholds: { trait: number; coherence: number };
  concurrency: number;
}

/** Options with their defaults, each checked before any work starts. */
function settingsOf(opts: ExtractOptions, nEmbd: number): Settings {
  const n = opts.rollouts ?? 10;
  const sampling = { temperature: opts.temperature ?? 1, topP: opts.topP ?? 1, maxTokens: opts.maxTokens ?? 1000 };
  const seed = opts.seed ?? 0;
  const thresholds = { trait: opts.traitThreshold ?? 50, coherence: opts.coherenceThreshold ?? 50 };
  checkInt("rollouts", n, 1);
  checkInt("max tokens", sampling.maxTokens, 1);
  checkInt("seed", seed, 0);
  checkNumber("trait threshold", thresholds.trait);
  checkNumber("coherence threshold", thresholds.coherence);
  const concurrency = opts.judgeConcurrency ?? 8;
  checkInt("judge concurrency", concurrency, 1);
  if (opts.parallel !== undefined) checkInt("parallel", opts.parallel, 1);
  if (opts.span !== undefined) {
    checkInt("span", opts.span, 1);
    if (opts.runner) throw new PersonaError("E_BAD_INPUT", "a span needs every kept pair's activations here: it does not run on a queue's workers");
    // The kept pairs bound K too, but they are known only after judging (checked then, before the capture).
    const most = Math.min(nEmbd, MAX_SPAN_K);
    if (opts.span > most) throw new PersonaError("E_BAD_INPUT", `--span ${opts.span}: a span holds at most ${most} directions (n_embd ${nEmbd}, at most ${MAX_SPAN_K})`);
  }
  return { n, sampling, seed, thresholds, concurrency };
}

/** Everything that changes the result; `parallel` does not (exact numerics, per-rollout seeds). */
async function runConfig(model: Model, opts: ExtractOptions, s: Settings, fileHash: string) {
  const { info } = model;
  return {
    model: {
      file_hash: fileHash,
      arch: info.architecture,
      n_layer: info.nLayer,
      n_embd: info.nEmbd,
      // Only with adapters, so runs made before adapters existed still resume.
      ...(info.adapters.length > 0 ? { with_adapters: await fingerprintModel(info) } : {}),
    },
    trait: { name: opts.trait.name, antonym: opts.trait.antonym ?? null, extract_hash: hashOf(opts.trait.extract) },
    judge: opts.judge.id,
    rollouts: s.n,
    temperature: s.sampling.temperature,
    top_p: s.sampling.topP,
    max_tokens: s.sampling.maxTokens,
    seed: s.seed,
    trait_threshold: s.thresholds.trait,
    coherence_threshold: s.thresholds.coherence,
  };
}

/** Opens (or resumes) the run directory; with `restart`, the judge cache of the run set aside is kept. */
async function openRun(opts: ExtractOptions, config: object): Promise<RunDir> {
  const carried = opts.restart ? await readFile(path.join(opts.runDir, JUDGE_CACHE)).catch(() => undefined) : undefined;
  const run = await RunDir.open(opts.runDir, "extract", config, { restart: opts.restart });
  // Judge scores depend only on (judge, rubric, question, answer), so a restarted run keeps the ones paid for.
  if (carried && !run.resumed && !existsSync(run.path(JUDGE_CACHE))) await run.writeArtifact(JUDGE_CACHE, carried);
  return run;
}

type Progress = (stage: ExtractStage, done: number, of?: number) => void;

interface RunRecords {
  rollouts: RecordLog<RolloutRecord>;
  judgements: RecordLog<Judgement>;
}

export async function extractPersonaVectors(model: Model, opts: ExtractOptions): Promise<ExtractResult> {
  const started = performance.now();
  const s = settingsOf(opts, model.info.nEmbd);
  opts.signal?.throwIfAborted();
  const fileHash = await fingerprintFile(model.info.path);
  const run = await openRun(opts, await runConfig(model, opts, s, fileHash));
  const vectorsPath = run.path(VECTORS);
  const summaryPath = run.path(SUMMARY);
  /** The finished run's vectors when only a span is asked of it: kept as they are (tensors, best and monitor layers), the span added. */
  let finished: PersonaVectors | undefined;
  if (run.resumed && existsSync(vectorsPath)) {
    const done = await readSummary(summaryPath, run.info.config_hash);
    if (done) {
      const stored = await readVectors(vectorsPath);
      if (opts.span === undefined || stored.spans?.prompt_last?.k === opts.span) {
        opts.onResume?.({ complete: true, rollouts: 0, judgements: 0, total: 0 });
        return { ...done, vectorsPath, summaryPath, runDir: run.dir, resumed: true };
      }
      finished = stored;
    }
  }

  const records: RunRecords = { rollouts: await run.records<RolloutRecord>("rollouts.jsonl"), judgements: await run.records<Judgement>("judgements.jsonl") };
  const judge = await CachedJudge.open(opts.judge, run.path(JUDGE_CACHE));
  const total = rolloutItems(opts.trait, s.n, s.seed).length;
  const progress: Progress = (stage, done, of = total) => opts.onProgress?.(stage, done, of);
  try {
    const generated = await rolloutAndJudge(model, judge, opts, s, records, progress, run.resumed);
    const items = rolloutItems(opts.trait, s.n, s.seed);
    if (items.every((it) => records.judgements.get(it.key)?.trait === null && records.judgements.get(it.key)?.coherence === null)) {
      throw judgeScoredNothing(judge.id, items.length);
    }
    const { counts, keptRows, scores } = filterRuns(opts.trait, s.n, records.rollouts, records.judgements, s.thresholds);
    if (counts.kept === 0) throw noPairsKept(opts.trait, counts, s.thresholds);
    // Before the capture: nothing stored is lost, and a rerun without --span redoes only the capture.
    if (opts.span !== undefined && opts.span > counts.kept) throw spanTooWide(opts.span, counts.kept);

    const captureStart = performance.now();
    const captureItems: CaptureItem[] = keptRows.flatMap((row) =>
      (["pos", "neg"] as const).map((polarity) => ({
        polarity,
        messages: rolloutMessages(opts.trait, { polarity, pair: row.pair, question: row.question }),
        response: records.rollouts.get(row[polarity])!.text,
      })),
    );
    // The span's pair differences are collected in the same capture pass as the means.
    const spanOf = opts.span === undefined ? undefined : promptLastSpanCollector(model.info, captureItems, opts.span);
    const means = await captureKept(model, opts, captureItems, progress, spanOf?.add);
    const span = spanOf?.finish();
    const written = { fileHash, counts, judge: judge.id, thresholds: s.thresholds, configHash: run.info.config_hash };
    await writeVectors(vectorsPath, finished && span ? { ...finished, spans: { ...finished.spans, prompt_last: span } } : freshVectors(model.info, opts, means, span, written));

    const timings: ExtractTimings = { ...generated, captureSeconds: (performance.now() - captureStart) / 1000, totalSeconds: (performance.now() - started) / 1000 };
    const result = { counts, scores, timings, judge: judge.id };
    await run.writeArtifact(SUMMARY, `${JSON.stringify(summaryFile(opts.trait, result, s.thresholds, run.info.config_hash), null, 2)}\n`);
    return { ...result, vectorsPath, summaryPath, runDir: run.dir, resumed: run.resumed };
  } finally {
    await Promise.allSettled([records.rollouts.close(), records.judgements.close(), judge.dispose()]);
  }
}

/**
 * Generates the rollouts not yet stored and judges every rollout not yet judged, judging each one
 * as soon as it is stored; the first failure of either stops both.
 */
async function rolloutAndJudge(
  model: Model,
  judge: Judge,
  opts: ExtractOptions,
  s: Settings,
  { rollouts, judgements }: RunRecords,
  progress: Progress,
  resumed: boolean,
): Promise<Omit<ExtractTimings, "captureSeconds" | "totalSeconds">> {
  const { trait } = opts;
  const ctl = new AbortController();
  const onAbort = () => ctl.abort(opts.signal?.reason);
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  let firstError: unknown;
  const fail = (e: unknown) => {
    firstError ??= e;
    ctl.abort(e);
  };
  const pool = new JudgePool(judge, { trait: trait.name, rubric: trait.extract.eval_prompt }, { concurrency: s.concurrency, signal: ctl.signal, onError: fail });
  const rolloutWrites = new Serial();
  const judgementWrites = new Serial();
  try {
    const items = rolloutItems(trait, s.n, s.seed);
    let generated = items.filter((it) => rollouts.has(it.key)).length;
    let judged = items.filter((it) => judgements.has(it.key)).length;
    if (resumed) opts.onResume?.({ complete: false, rollouts: generated, judgements: judged, total: items.length });
    let newJudgements = 0;
    let judgeStart: number | undefined;
    const judgeItem = (key: string, question: number, text: string) => {
      judgeStart ??= performance.now();
      pool.submit(trait.extract.questions[question]!, text, (j) =>
        judgementWrites.run(async () => {
          await judgements.append(key, j);
          newJudgements++;
          progress("judging", ++judged);
        }),
      );
    };
    progress("rollouts", generated);
    progress("judging", judged);
    for (const it of items) {
      const r = rollouts.get(it.key);
      if (r && !judgements.has(it.key)) judgeItem(it.key, it.question, r.text);
    }

    const storedBefore = new Set(items.filter((it) => rollouts.has(it.key)).map((it) => it.key));
    const pending = items.length - storedBefore.size;
    const genStart = performance.now();
    if (pending > 0) judgeStart ??= genStart;
    try {
      const stats = await runJudgedRollouts(
        model,
        items.map((it) => ({ key: it.key, messages: rolloutMessages(trait, it), seed: it.seed })),
        {
          name: "extract",
          judge,
          judgeSpec: opts.judgeSpec ?? opts.judge.id,
          rubric: { trait: trait.name, rubric: trait.extract.eval_prompt },
          // Exact numerics: the batch a rollout lands in changes it only by float rounding.
          sampling: { ...s.sampling, exact: true, parallel: opts.parallel },
          judgeConcurrency: s.concurrency,
          shardSize: opts.shardRollouts ?? 256,
          stored: (i) => storedBefore.has(items[i]!.key),
          runner: opts.runner,
          signal: ctl.signal,
          // Only rollouts not stored before come back (exact numerics: the others are not
          // generated again). A rollout is stored before its judgement, so a stored judgement
          // always has its rollout.
          onRollout: (index, r) =>
            rolloutWrites.run(async () => {
              await rollouts.append(items[index]!.key, r);
              progress("rollouts", ++generated);
            }),
          onReply: (index, r) =>
            rolloutWrites.run(async () => {
              await judgements.append(items[index]!.key, { trait: r.trait, coherence: r.coherence });
              newJudgements++;
              progress("judging", ++judged);
            }),
        },
      );
      opts.onShardStats?.(stats);
    } catch (e) {
      throw firstError ?? e;
    }
    await rolloutWrites.settled();
    const rolloutsSeconds = pending > 0 ? (performance.now() - genStart) / 1000 : 0;
    progress("judging", judged);
    if (firstError !== undefined) throw firstError;
    await pool.drain();
    if (firstError !== undefined) throw firstError;
    const judgingSeconds = judgeStart === undefined ? 0 : (performance.now() - judgeStart) / 1000;
    return { rolloutsSeconds, newRollouts: pending, newJudgements, judgingSeconds };
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
    // Judge calls still in flight after a failure are not waited for (nothing is lost: they were not stored).
    ctl.abort();
    await rolloutWrites.settled();
    await pool.drain().catch(() => undefined);
    await judgementWrites.settled();
  }
}

/** The kept samples' mean differences at every layer, with the run's metadata (and `span` when asked for). */
function freshVectors(
  info: ModelInfo,
  opts: ExtractOptions,
  means: Record<Polarity, ReductionMeans>,
  span: SpanMatrix | undefined,
  r: { fileHash: string; counts: ExtractCounts; judge: string; thresholds: { trait: number; coherence: number }; configHash: string },
): PersonaVectors {
  const matrix = (a: Float32Array) => layerMatrix(info.nLayer + 1, info.nEmbd, a);
  return {
    tensors: {
      response_avg: matrix(meanDiff(means.pos.responseAvg, means.neg.responseAvg)),
      prompt_avg: matrix(meanDiff(means.pos.promptAvg, means.neg.promptAvg)),
      prompt_last: matrix(meanDiff(means.pos.promptLast, means.neg.promptLast)),
    },
    ...(span && { spans: { prompt_last: span } }),
    meta: {
      trait: opts.trait.name,
      source: "extract",
      model: { name: info.name, arch: info.architecture, nLayer: info.nLayer, nEmbd: info.nEmbd, fileHash: r.fileHash },
      counts: { kept: r.counts.kept, dropped: r.counts.dropped },
      judge: r.judge,
      thresholds: r.thresholds,
      extra: { filter_counts: JSON.stringify(snakeCounts(r.counts)), run_config_hash: r.configHash },
    },
  };
}

/** One forward pass per kept pos and neg reply; residual means per polarity. */
async function captureKept(model: Model, opts: ExtractOptions, captureItems: readonly CaptureItem[], progress: Progress, onActivations?: CaptureMeansOptions["onActivations"]) {
  progress("capture", 0, captureItems.length);
  return captureMeans(model, captureItems, {
    // Shards of at most 64 samples (fewer with a smaller --chunk): forward passes are cheaper than rollouts.
    chunk: Math.min(64, opts.shardRollouts ?? 64),
    runner: opts.runner,
    onShardStats: opts.onShardStats,
    ...(opts.signal && { signal: opts.signal }),
    onSample: (done, of) => progress("capture", done, of),
    ...(onActivations && { onActivations }),
  });
}

/** Aligns pos and neg judgements by (pair, question, rollout), filters them, and averages scores. */
function filterRuns(
  trait: TraitDefinition,
  n: number,
  rollouts: { get(key: string): RolloutRecord | undefined },
  judgements: { get(key: string): Judgement | undefined },
  thresholds: { trait: number; coherence: number },
) {
  const rows = rolloutRows(trait, n);
  const scoreOf = (key: string): Judgement => {
    const j = judgements.get(key);
    if (!j) throw new PersonaError("E_INTERNAL", `rollout ${key} has no judgement after judging finished`);
    return j;
  };
  const pos = rows.map((r) => scoreOf(r.pos));
  const neg = rows.map((r) => scoreOf(r.neg));
  const filtered = filterPairs(pos, neg, { traitThreshold: thresholds.trait, coherenceThreshold: thresholds.coherence });
  const counts: ExtractCounts = { ...filtered.counts, emptyResponse: 0 };
  const keptRows = filtered.kept.map((i) => rows[i]!).filter((row) => {
    if (rollouts.get(row.pos)!.text !== "" && rollouts.get(row.neg)!.text !== "") return true;
    counts.emptyResponse++;
    counts.kept--;
    counts.dropped++;
    return false;
  });
  return { counts, keptRows, scores: { pos: meanScores(pos), neg: meanScores(neg) } };
}

function meanScores(js: readonly Judgement[]): PolarityScores {
  const mean = (xs: (number | null)[]) => {
    const v = xs.filter((x): x is number => x !== null);
    return v.length === 0 ? null : v.reduce((a, b) => a + b, 0) / v.length;
  };
  return { trait: mean(js.map((j) => j.trait)), coherence: mean(js.map((j) => j.coherence)), rollouts: js.length };
}

function snakeCounts(c: ExtractCounts): Record<string, number> {
  return {
    total: c.total,
    kept: c.kept,
    dropped: c.dropped,
    null_score: c.nullScore,
    pos_trait_low: c.posTraitLow,
    neg_trait_high: c.negTraitHigh,
    incoherent: c.incoherent,
    empty_response: c.emptyResponse,
  };
}

/** The filter kept too few pairs: none (`kept` 0), or fewer than `--span`'s K. */
export class TooFewPairsError extends PersonaError {
  constructor(
    message: string,
    readonly kept: number,
  ) {
    super("E_BAD_INPUT", message);
  }
}

function spanTooWide(k: number, kept: number): TooFewPairsError {
  return new TooFewPairsError(
    `--span ${k} needs at least ${k} kept pairs (its directions come from their differences) but ${kept} passed the filter; ` +
      `nothing was captured: rerun with --span ${kept} or less, or without --span (the stored rollouts and judgements are reused, only the capture is redone), ` +
      `or with more rollouts (--rollouts, with --restart)`,
    kept,
  );
}

function noPairsKept(trait: TraitDefinition, c: ExtractCounts, t: { trait: number; coherence: number }): TooFewPairsError {
  const reasons = [
    `${c.nullScore} had a null score (refusal or no number)`,
    `${c.posTraitLow} pos replies scored below ${t.trait} for ${trait.name}`,
    `${c.negTraitHigh} neg replies scored ${t.trait} or more`,
    `${c.incoherent} had a coherence below ${t.coherence}`,
  ];
  if (c.emptyResponse > 0) reasons.push(`${c.emptyResponse} had an empty reply`);
  return new TooFewPairsError(
    `no rollout pair passed the filter: of ${c.total} pos/neg pairs, ${reasons.join(", ")}. ` +
      `Try a lower trait or coherence threshold (--trait-threshold, --coherence-threshold) or more rollouts (--rollouts), ` +
      `with --restart: the judge scores already paid for are reused.`,
    0,
  );
}

/** Timings as summary.json and `extract --json` write them. */
export function timingsJson(t: ExtractTimings): Record<string, number> {
  return {
    rollouts_s: t.rolloutsSeconds,
    new_rollouts: t.newRollouts,
    rollouts_per_s: t.rolloutsSeconds > 0 ? t.newRollouts / t.rolloutsSeconds : 0,
    new_judgements: t.newJudgements,
    judging_s: t.judgingSeconds,
    capture_s: t.captureSeconds,
    total_s: t.totalSeconds,
  };
}

function summaryFile(
  trait: TraitDefinition,
  r: Pick<ExtractResult, "counts" | "scores" | "timings" | "judge">,
  thresholds: { trait: number; coherence: number },
  configHash: string,
): SummaryFile {
  return {
    trait: trait.name,
    judge: r.judge,
    config_hash: configHash,
    counts: snakeCounts(r.counts),
    thresholds,
    scores: r.scores,
    timings: timingsJson(r.timings),
    vectors: VECTORS,
  };
}

async function readSummary(file: string, configHash: string): Promise<Omit<ExtractResult, "vectorsPath" | "summaryPath" | "runDir" | "resumed"> | undefined> {
  let s: SummaryFile;
  try {
    s = JSON.parse(await readFile(file, "utf8")) as SummaryFile;
  } catch {
    return undefined;
  }
  if (s.config_hash !== configHash) return undefined;
  const c = s.counts;
  const num = (k: string) => c[k] ?? 0;
  return {
    counts: {
      total: num("total"),
      kept: num("kept"),
      dropped: num("dropped"),
      nullScore: num("null_score"),
      posTraitLow: num("pos_trait_low"),
      negTraitHigh: num("neg_trait_high"),
      incoherent: num("incoherent"),
      emptyResponse: num("empty_response"),
    },
    scores: s.scores,
    timings: { rolloutsSeconds: 0, newRollouts: 0, newJudgements: 0, judgingSeconds: 0, captureSeconds: 0, totalSeconds: 0 },
    judge: s.judge,
  };
}
