/**
 * Training-data screening (spec §2, "Data screening"): for every (prompt, response) sample, the
 * base model's own reply to the same prompt and ΔP = proj(sample response) − proj(base reply),
 * projections of the response-averaged residual at the chosen layer onto each trait's unit vector.
 * Several traits are probes of the same forward pass. `cheap` skips the base replies and keeps the
 * raw projection only.
 *
 * It streams: the input is read record by record in chunks, each chunk's scores are appended to
 * `scores.jsonl` in input order and fsync'd before the next chunk starts, so memory does not grow
 * with the dataset and a process killed at any moment resumes at the first unscored record.
 * Run directory:
 *   run.json       config (model and data fingerprints, traits, layers, sampling)
 *   scores.jsonl   one line per input record, in input order (a broken record: its line and error)
 *   summary.json   dataset means and flagged samples per trait (atomic, written last)
 *   report.html    ΔP histograms and the flagged samples with their text (atomic)
 */
import type { Model } from "../engine/Model.js";
import type { ResolvedProbes } from "../engine/capture.js";
import { requestSeed } from "../engine/Model.js";
import { PersonaError } from "../errors.js";
import { screenHtml } from "../report/screen.js";
import { type DatasetRecord, readDataset, type TrainingSample } from "./dataset.js";
import type { ModelRef } from "../queue/models.js";
import { LOCAL_RUNNER, type Shard, type ShardRunner, type ShardStats } from "../queue/runner.js";
import type { ShardContext } from "../queue/worker.js";
import { JsonlLog, readJsonl, readJsonLines } from "../store/jsonl.js";
import { fingerprintFile, fingerprintModel, hashOf, RunDir } from "./rundir.js";

export interface ScreenTrait {
  name: string;
  /** Residual layer (0..n_layer) whose response average is projected. */
  layer: number;
  /** The trait's vector at that layer (any length; projected onto its direction). */
  vector: Float32Array;
  /** Where the vector came from, for run.json and the report. */
  source?: string;
}

export interface ScreenProgress {
  /** Records finished, including those of an earlier, interrupted run. */
  done: number;
  /** Broken records among them. */
  bad: number;
  /** Records scored by this process. */
  scoredNow: number;
}

export interface ScreenOptions {
  /** Training data: chat JSONL, or JSONL/CSV with prompt/response (or question/answer). */
  data: string;
  traits: readonly ScreenTrait[];
  /** Run directory; resumed when it holds a screening run with the same configuration. */
  runDir: string;
  /** Only the raw projection of each response: no base replies. Defaults to false. */
  cheap?: boolean;
  /** Samples flagged per trait (highest ΔP, or projection when cheap). Defaults to 20. */
  top?: number;
  /** Base replies: sampling temperature (default 1), most new tokens (default 256), seed (default 0). */
  temperature?: number;
  maxTokens?: number;
  seed?: number;
  /** Records per engine call. Defaults to 64. */
  chunkSize?: number;
  /**
   * JSONL of `{"index", "trait_eliciting"}` (as `persona demo datasets` writes beside a mixed
   * dataset): the summary then gives each trait's ROC AUC for finding the marked samples.
   */
  labels?: string;
  /** Refuse the whole input, before any work, if a record is broken. Defaults to false (skip them). */
  strict?: boolean;
  /** Set aside a run directory with another configuration instead of refusing it. */
  restart?: boolean;
  /** Where the shards (one per `chunkSize` records) run: this process (default), or a queue's workers. */
  runner?: ShardRunner;
  signal?: AbortSignal;
  onProgress?(p: ScreenProgress): void;
  /** Called for each broken record as it is met. */
  onBadRecord?(r: { index: number; line: number; error: string }): void;
}

export interface TraitScores {
  projection: number;
  /** null when cheap, or when the base reply was empty. */
  base_projection: number | null;
  delta_p: number | null;
}

/** One line of `scores.jsonl`. */
export interface ScoreLine {
  index: number;
  line: number;
  /** Per trait; absent for a broken record. */
  scores?: Record<string, TraitScores>;
  base_reply?: string;
  error?: string;
}

export interface FlaggedSample {
  index: number;
  line: number;
  delta_p: number | null;
  projection: number;
}

export interface TraitSummary {
  layer: number;
  source: string | null;
  dataset_mean_delta_p: number | null;
  dataset_mean_projection: number | null;
  dataset_mean_base_projection: number | null;
  /** Highest ΔP first (projection when cheap). */
  flagged: FlaggedSample[];
  /** With labels: sample-level ROC AUC of ΔP and of the raw projection for finding the labelled samples. */
  roc_auc?: { delta_p: number | null; projection: number | null };
}

export interface ScreenSummary {
  /** Records scored. */
  n: number;
  /** Broken records skipped. */
  skipped: number;
  cheap: boolean;
  traits: Record<string, TraitSummary>;
  /** The first broken records (line and reason). */
  bad_records: { index: number; line: number; error: string }[];
}

export interface ScreenResult {
  summary: ScreenSummary;
  /** True when an earlier run's scores were kept. */
  resumed: boolean;
  scoresPath: string;
  summaryPath: string;
  reportPath: string;
  /** Shards (record chunks) this invocation finished, reused from a killed coordinator's queue, or retried. */
  shards: ShardStats;
}

const MAX_BAD_LISTED = 100;

/** Per-request seed from the base seed and the prompt's tokens: a sample's base reply does not depend on where it sits in the file. */
function promptSeed(seed: number, prompt: Int32Array): number {
  let h = 0x811c9dc5;
  for (const t of prompt) h = Math.imul(h ^ t, 0x01000193) >>> 0;
  return requestSeed(seed, h);
}

function checkTraits(traits: readonly ScreenTrait[], nLayer: number): void {
  if (traits.length === 0) throw new PersonaError("E_BAD_INPUT", "screening needs at least one trait");
  const names = new Set<string>();
  for (const t of traits) {
    if (names.has(t.name)) throw new PersonaError("E_BAD_INPUT", `trait ${t.name} is listed twice`);
    names.add(t.name);
    if (!Number.isInteger(t.layer) || t.layer < 0 || t.layer > nLayer) {
      throw new PersonaError("E_SHAPE", `${t.name}: layer ${t.layer} is outside 0..${nLayer}`);
    }
  }
}

export async function screenDataset(model: Model, opts: ScreenOptions): Promise<ScreenResult> {
  const cheap = opts.cheap ?? false;
  const top = opts.top ?? 20;
  const chunkSize = opts.chunkSize ?? 64;
  const maxTokens = opts.maxTokens ?? 256;
  const temperature = opts.temperature ?? 1;
  const seed = opts.seed ?? 0;
  for (const [name, v, min] of [["top", top, 0], ["chunk size", chunkSize, 1], ["max tokens", maxTokens, 1]] as const) {
    if (!Number.isInteger(v) || v < min) throw new PersonaError("E_BAD_INPUT", `${name} must be an integer ≥ ${min}, got ${v}`);
  }
  checkTraits(opts.traits, model.info.nLayer);
  const probes = model.probes(opts.traits.map((t) => ({ layer: t.layer, vector: t.vector })));

  let dataHash: string;
  try {
    dataHash = await fingerprintFile(opts.data);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new PersonaError("E_NOT_FOUND", `${opts.data} does not exist`);
    throw e;
  }
  if (opts.strict) await refuseBrokenInput(opts.data);

  const config = {
    model: { name: model.info.name, hash: await fingerprintModel(model.info) },
    data: { path: opts.data, hash: dataHash },
    traits: opts.traits.map((t) => ({ name: t.name, layer: t.layer, source: t.source ?? null, vector: hashOf(Array.from(t.vector)) })),
    cheap,
    ...(cheap ? {} : { temperature, maxTokens, seed }),
  };
  const run = await RunDir.open(opts.runDir, "screen", config, { restart: opts.restart });
  const scoresPath = run.path("scores.jsonl");
  const log = await JsonlLog.open(scoresPath);
  const resumed = log.lines > 0;
  const progress: ScreenProgress = { done: log.lines, bad: 0, scoredNow: 0 };
  const settings: ScreenSettings = { cheap, temperature, maxTokens, seed };
  // One shard is one engine call of `chunkSize` records, cut exactly where a local run cuts its
  // chunks: batch composition changes float sums, so this is what makes a distributed run's
  // scores the same bytes as a local one's.
  async function* shards(): AsyncGenerator<Shard<DatasetRecord[]>> {
    let chunk: DatasetRecord[] = [];
    const shard = () => ({ key: `${chunk[0]!.index}-${chunk[chunk.length - 1]!.index}`, data: chunk });
    for await (const rec of readDataset(opts.data)) {
      if (rec.index < log.lines) continue;
      chunk.push(rec);
      if (chunk.length >= chunkSize) {
        yield shard();
        chunk = [];
      }
    }
    if (chunk.length > 0) yield shard();
  }
  let shardStats: ShardStats;
  try {
    const common: ScreenShardCommon = {
      model: { hash: config.model.hash, name: model.info.name },
      settings,
      traits: opts.traits.map((t) => ({ name: t.name, layer: t.layer, vector: Array.from(t.vector) })),
    };
    shardStats = await (opts.runner ?? LOCAL_RUNNER).run({
      kind: "screen",
      runId: `screen-${run.info.config_hash}`,
      common,
      shards: shards(),
      local: (records) => scoreRecords(model, probes, opts.traits, records, settings, opts.signal),
      onResult: async (_key, lines) => {
        for (const l of lines) {
          if (l.error === undefined) continue;
          progress.bad++;
          opts.onBadRecord?.({ index: l.index, line: l.line, error: l.error });
        }
        await log.append(lines);
        progress.done = log.lines;
        progress.scoredNow += lines.filter((l) => l.scores).length;
        opts.onProgress?.({ ...progress });
      },
      signal: opts.signal,
    });
  } finally {
    await log.close();
  }

  const labels = opts.labels === undefined ? undefined : await readLabels(opts.labels);
  const summary = await summarizeScores(scoresPath, opts.traits, { top, cheap, labels });
  const summaryPath = run.path("summary.json");
  await run.writeArtifact("summary.json", `${JSON.stringify(summary, null, 2)}\n`);
  const flaggedTexts = await samplesAt(opts.data, new Set(Object.values(summary.traits).flatMap((t) => t.flagged.map((f) => f.index))));
  await run.writeArtifact("report.html", await screenHtml(summary, scoresPath, flaggedTexts, { model: model.info.name, data: opts.data }));
  return { summary, resumed, scoresPath, summaryPath, reportPath: run.path("report.html"), shards: shardStats };
}

/** Base-reply sampling, shared by every shard of a run. */
export interface ScreenSettings {
  cheap: boolean;
  temperature: number;
  maxTokens: number;
  seed: number;
}

/** What every screening shard of a run carries to a worker besides its records. */
export interface ScreenShardCommon {
  model: ModelRef;
  settings: ScreenSettings;
  traits: { name: string; layer: number; vector: number[] }[];
}

/** A worker's handler for screening shards: the same scoring as a local run's chunk. */
export async function screenShard(common: ScreenShardCommon, records: DatasetRecord[], ctx: ShardContext): Promise<ScoreLine[]> {
  const model = await ctx.model(common.model);
  const traits = common.traits.map((t) => ({ ...t, vector: Float32Array.from(t.vector) }));
  checkTraits(traits, model.info.nLayer);
  const probes = model.probes(traits.map((t) => ({ layer: t.layer, vector: t.vector })));
  return scoreRecords(model, probes, traits, records, common.settings, ctx.signal);
}

/** Scores one engine call's worth of records: a line per record, in order (broken ones with their error). */
async function scoreRecords(
  model: Model,
  probes: ResolvedProbes,
  traits: readonly ScreenTrait[],
  records: readonly DatasetRecord[],
  settings: ScreenSettings,
  signal: AbortSignal | undefined,
): Promise<ScoreLine[]> {
  signal?.throwIfAborted();
  const lines: ScoreLine[] = records.map((r) => ({ index: r.index, line: r.line }));
  const good: { at: number; prompt: Int32Array; response: Int32Array }[] = [];
  for (const [at, r] of records.entries()) {
    let error = r.error;
    if (r.sample) {
      const prompt = await model.encodeChat(r.sample.prompt);
      const response = await model.tokenize(r.sample.response, { addSpecial: false });
      const total = prompt.length + response.length;
      if (response.length === 0) error = "the response has no tokens";
      else if (total > model.info.nCtxTrain) error = `prompt and response are ${total} tokens; the model's context is ${model.info.nCtxTrain}`;
      else good.push({ at, prompt, response });
    }
    if (error !== undefined) lines[at]!.error = error;
  }
  const { cheap, temperature, maxTokens, seed } = settings;
  const samples = good.map((g) => {
    const tokens = new Int32Array(g.prompt.length + g.response.length);
    tokens.set(g.prompt);
    tokens.set(g.response, g.prompt.length);
    return { tokens, promptLength: g.prompt.length, seed: promptSeed(seed, g.prompt) };
  });
  // The base reply shares its sample's prompt cells: one call, each prompt decoded once.
  const scored = cheap
    ? (await model.project(samples, probes, { signal })).map((projections) => ({ projections, reply: undefined }))
    : await model.projectAndReply(samples, probes, { temperature, maxTokens, exact: true, signal });
  for (const [j, g] of good.entries()) {
    const scores: Record<string, TraitScores> = {};
    const b = scored[j]!.reply;
    const baseProj = b?.projections && b.projections.nResponseTokens > 0 ? b.projections.responseAvg : undefined;
    traits.forEach((t, k) => {
      const projection = scored[j]!.projections.responseAvg[k]!;
      const baseProjection = baseProj ? baseProj[k]! : null;
      scores[t.name] = { projection, base_projection: baseProjection, delta_p: baseProjection === null ? null : projection - baseProjection };
    });
    const line = lines[g.at]!;
    line.scores = scores;
    if (b) line.base_reply = b.text;
  }
  return lines;
}

/** The samples at `indices` (streamed: nothing else is held). */
async function samplesAt(file: string, indices: ReadonlySet<number>): Promise<Map<number, TrainingSample>> {
  const found = new Map<number, TrainingSample>();
  if (indices.size === 0) return found;
  for await (const rec of readDataset(file)) if (indices.has(rec.index) && rec.sample) found.set(rec.index, rec.sample);
  return found;
}

/** Streams the whole input once and refuses it, listing the broken records, if any is broken. */
async function refuseBrokenInput(file: string): Promise<void> {
  const bad: DatasetRecord[] = [];
  let count = 0;
  for await (const r of readDataset(file)) {
    if (!r.error) continue;
    count++;
    if (bad.length < 10) bad.push(r);
  }
  if (count === 0) return;
  const list = bad.map((r) => `  line ${r.line}: ${r.error}`).join("\n");
  throw new PersonaError("E_BAD_INPUT", `${file} has ${count} broken record${count === 1 ? "" : "s"}:\n${list}${count > bad.length ? "\n  ..." : ""}`);
}

/** Keeps the k largest (value, then lowest index) of a stream. */
class TopK {
  readonly items: FlaggedSample[] = [];
  constructor(
    private readonly k: number,
    private readonly key: (s: FlaggedSample) => number,
  ) {}

  offer(s: FlaggedSample): void {
    if (this.k === 0) return;
    const v = this.key(s);
    const items = this.items;
    if (items.length === this.k && v <= this.key(items[items.length - 1]!)) return;
    let i = items.length;
    while (i > 0 && this.key(items[i - 1]!) < v) i--;
    items.splice(i, 0, s);
    if (items.length > this.k) items.pop();
  }
}

/** Dataset means and top-k per trait, in one streaming pass over `scores.jsonl`. */
export async function summarizeScores(
  scoresPath: string,
  traits: readonly Pick<ScreenTrait, "name" | "layer" | "source">[],
  opts: { top: number; cheap: boolean; labels?: ReadonlyMap<number, boolean> },
): Promise<ScreenSummary> {
  const labels = opts.labels;
  // ROC AUC needs every score: two numbers per sample and trait, only when labels are given.
  const ranked = traits.map(() => ({ delta: [] as number[], deltaLabels: [] as boolean[], proj: [] as number[], projLabels: [] as boolean[] }));
  const acc = traits.map((t) => ({
    t,
    sums: { delta: 0, nDelta: 0, proj: 0, base: 0, nBase: 0 },
    top: new TopK(opts.top, (s) => (opts.cheap ? s.projection : (s.delta_p ?? -Infinity))),
  }));
  let n = 0;
  let skipped = 0;
  const bad: ScreenSummary["bad_records"] = [];
  for await (const rec of readJsonl(scoresPath, (v) => v as ScoreLine)) {
    if (!rec.scores) {
      skipped++;
      if (bad.length < MAX_BAD_LISTED) bad.push({ index: rec.index, line: rec.line, error: rec.error ?? "broken" });
      continue;
    }
    n++;
    const label = labels?.get(rec.index);
    for (const [k, a] of acc.entries()) {
      const s = rec.scores[a.t.name]!;
      if (label !== undefined) {
        const r = ranked[k]!;
        r.proj.push(s.projection);
        r.projLabels.push(label);
        if (s.delta_p !== null) {
          r.delta.push(s.delta_p);
          r.deltaLabels.push(label);
        }
      }
      a.sums.proj += s.projection;
      if (s.base_projection !== null) {
        a.sums.base += s.base_projection;
        a.sums.nBase++;
      }
      if (s.delta_p !== null) {
        a.sums.delta += s.delta_p;
        a.sums.nDelta++;
      }
      if (opts.cheap || s.delta_p !== null) a.top.offer({ index: rec.index, line: rec.line, delta_p: s.delta_p, projection: s.projection });
    }
  }
  const mean = (sum: number, count: number) => (count > 0 ? sum / count : null);
  const out: Record<string, TraitSummary> = {};
  for (const [k, a] of acc.entries()) {
    const r = ranked[k]!;
    out[a.t.name] = {
      layer: a.t.layer,
      source: a.t.source ?? null,
      dataset_mean_delta_p: mean(a.sums.delta, a.sums.nDelta),
      dataset_mean_projection: mean(a.sums.proj, n),
      dataset_mean_base_projection: mean(a.sums.base, a.sums.nBase),
      flagged: a.top.items,
      ...(labels && { roc_auc: { delta_p: rocAuc(r.delta, r.deltaLabels), projection: rocAuc(r.proj, r.projLabels) } }),
    };
  }
  return { n, skipped, cheap: opts.cheap, traits: out, bad_records: bad };
}

/** `{"index", "trait_eliciting"}` lines as a map; refused with line numbers when broken. */
export async function readLabels(file: string): Promise<Map<number, boolean>> {
  const out = new Map<number, boolean>();
  let line = 0;
  try {
    for await (const v of readJsonLines<{ index?: unknown; trait_eliciting?: unknown } | null>(file)) {
      line++;
      // A line may hold any JSON value (null included), not only an object.
      if (typeof v !== "object" || v === null || !Number.isInteger(v.index) || typeof v.trait_eliciting !== "boolean") {
        throw new PersonaError("E_BAD_FORMAT", `${file}: label ${line} needs an integer "index" and a boolean "trait_eliciting"`);
      }
      out.set(v.index as number, v.trait_eliciting);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new PersonaError("E_NOT_FOUND", `${file} does not exist`);
    if (e instanceof SyntaxError) throw new PersonaError("E_BAD_FORMAT", `${file}: label ${line + 1} is not valid JSON`);
    throw e;
  }
  return out;
}

/** Sample-level ROC AUC of `scores` for separating `labels` true from false (ties count half); null without both classes. */
export function rocAuc(scores: readonly number[], labels: readonly boolean[]): number | null {
  const order = scores.map((s, i) => [s, labels[i]!] as const).sort((a, b) => a[0] - b[0]);
  let pos = 0;
  let neg = 0;
  let rankSum = 0;
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j < order.length && order[j]![0] === order[i]![0]) j++;
    const avgRank = (i + 1 + j) / 2;
    for (let k = i; k < j; k++) {
      if (order[k]![1]) {
        pos++;
        rankSum += avgRank;
      } else neg++;
    }
    i = j;
  }
  if (pos === 0 || neg === 0) return null;
  return (rankSum - (pos * (pos + 1)) / 2) / (pos * neg);
}

