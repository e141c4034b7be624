/**
 * Monitoring (spec §2): does the last prompt token's projection on a trait's unit vector, taken
 * before any token is generated, predict how strongly the replies will show the trait? For each
 * prompt (a conversation without the reply) the projection at every layer, then N sampled replies
 * judged for the trait and coherence; Pearson r between projection and mean trait score across
 * prompts, per layer, and the most predictive layer.
 *
 * Run directory:
 *   run.json          config (model fingerprint, trait, vectors, prompts, sampling)
 *   rollouts.jsonl    `p/k` → {text, trait, coherence}, appended as each reply is judged
 *   judge-cache.jsonl (when the caller wraps the judge) every judge answer
 *   monitor.json      the result (the `--json` contract), monitor.html the report (atomic)
 * Projections are cheap and deterministic, so a resumed run recomputes them; it generates and
 * judges only the replies not stored yet (exact numerics: a reply's batch changes it only by float
 * rounding, so a resumed run matches an uninterrupted one but for a token within ~1e-6 of a
 * sampling boundary; 0 of 2240 demo-model replies differed).
 */
import type { Model } from "../engine/Model.js";
import { requestSeed } from "../engine/Model.js";
import { existsSync } from "node:fs";
import path from "node:path";
import { validateMessages } from "../engine/chat.js";
import type { ChatMessage } from "../engine/types.js";
import { PersonaError } from "../errors.js";
import { readInputLines } from "../store/jsonl.js";
import type { Judge } from "../judge/types.js";
import { monitorHtml, type MonitorReportMeta } from "../report/monitor.js";
import { pearson } from "../report/scatter.js";
import { writeFileAtomic } from "../store/atomic.js";
import type { ShardRunner, ShardStats } from "../queue/runner.js";
import { runJudgedRollouts } from "./rollout-shards.js";
import { systemPrompt, type TraitDefinition } from "../traits/format.js";
import { type LayerMatrix, row } from "../vectors/format.js";
import { checkFits } from "../vectors/steer.js";
import { fingerprintFile, hashOf, RunDir } from "./rundir.js";
import { judgeScoredNothing } from "./evaluate.js";

export interface MonitorPrompt {
  /** The conversation before the reply (no assistant message at the end). */
  messages: ChatMessage[];
  /** How strongly the prompt asks for the trait, 0..1, when known (graded prompts). */
  level?: number;
  /** Group name for the report's colours (e.g. `0.25`, `neg`, `pos`). */
  group?: string;
}

export interface MonitorPoint {
  messages: ChatMessage[];
  group: string | null;
  level: number | null;
  /** Last prompt token's projection at each layer 0..n_layer (null where the vector is zero). */
  projections: (number | null)[];
  /** Mean trait score over the prompt's judged replies (null when none could be scored). */
  traitScore: number | null;
  coherence: number | null;
  replies: { text: string; trait: number | null; coherence: number | null }[];
}

export interface MonitorResult {
  trait: string;
  /** Pearson r per layer (null where undefined: zero vector, no variance, < 2 points). */
  perLayer: { layer: number; pearsonR: number | null }[];
  /** The layer asked for, else the one with the highest r. */
  layer: number;
  pearsonR: number | null;
  points: MonitorPoint[];
  resumed: boolean;
  /** Shards of replies this invocation finished (see ShardStats). */
  shards: ShardStats;
}

export interface MonitorOptions {
  trait: TraitDefinition;
  judge: Judge;
  /** The trait's vectors, `[n_layer+1, n_embd]` (one tensor, e.g. response_avg). */
  vectors: LayerMatrix;
  /** Recorded in run.json and the report. */
  vectorsSource?: string;
  prompts: readonly MonitorPrompt[];
  /** Report this layer; defaults to the most predictive one. */
  layer?: number;
  /** Replies per prompt. Defaults to 5. */
  samples?: number;
  /** Defaults to 1, 256, 0. */
  temperature?: number;
  maxTokens?: number;
  seed?: number;
  runDir: string;
  restart?: boolean;
  /** Judge calls in flight at once. Defaults to 16. */
  judgeConcurrency?: number;
  signal?: AbortSignal;
  onProgress?(p: { judged: number; total: number }): void;
  /** Where the replies are generated and judged, in shards of `shardRequests`: here (default) or on a queue's workers. */
  runner?: ShardRunner;
  /** The judge's spec, what a queue's workers open. Defaults to the judge's id. */
  judgeSpec?: string;
  /** Replies per shard (one generate call each). Defaults to all in one. */
  shardRequests?: number;
}

/**
 * The trait's graded system prompts, ordered from its opposite to the trait, each crossed with
 * `questions`; without graded prompts in the trait, its neg instructions, no system prompt, and
 * its pos instructions.
 */
export function gradedMonitorPrompts(trait: TraitDefinition, questions: readonly string[] = trait.eval.questions): MonitorPrompt[] {
  const systems: { system?: string; level: number; group: string }[] = trait.graded
    ? [...trait.graded].sort((a, b) => a.level - b.level).map((g) => ({ system: g.system, level: g.level, group: String(g.level) }))
    : [
        ...trait.eval.instruction.map((p) => ({ system: systemPrompt(trait.name, trait.antonym, p.neg, "neg"), level: 0, group: "neg" })),
        { level: 0.5, group: "none" },
        ...trait.eval.instruction.map((p) => ({ system: systemPrompt(trait.name, trait.antonym, p.pos, "pos"), level: 1, group: "pos" })),
      ];
  return systems.flatMap((s) =>
    questions.map((q) => ({
      messages: [...(s.system === undefined ? [] : [{ role: "system", content: s.system }]), { role: "user", content: q }],
      level: s.level,
      group: s.group,
    })),
  );
}

interface ReplyRecord {
  text: string;
  trait: number | null;
  coherence: number | null;
}

const mean = (xs: readonly (number | null)[]) => {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
};

export async function monitorTrait(model: Model, opts: MonitorOptions): Promise<MonitorResult> {
  const { nLayer } = model.info;
  const samples = opts.samples ?? 5;
  const temperature = opts.temperature ?? 1;
  const maxTokens = opts.maxTokens ?? 256;
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(samples) || samples < 1) throw new PersonaError("E_BAD_INPUT", `samples must be a positive integer, got ${samples}`);
  if (opts.prompts.length < 2) throw new PersonaError("E_BAD_INPUT", "monitoring needs at least two prompts to correlate");
  checkFits("the monitored vectors", opts.vectors, model.info);
  if (opts.layer !== undefined && (!Number.isInteger(opts.layer) || opts.layer < 0 || opts.layer > nLayer)) {
    throw new PersonaError("E_SHAPE", `layer ${opts.layer} is outside 0..${nLayer}`);
  }
  for (const [i, p] of opts.prompts.entries()) {
    const last = p.messages[p.messages.length - 1];
    if (!last || last.role === "assistant") throw new PersonaError("E_BAD_INPUT", `prompt ${i + 1} must end before the assistant's reply`);
  }

  // Probes at every layer whose vector is non-zero (layer 0's often is not useful but is reported).
  const layers = Array.from({ length: nLayer + 1 }, (_, l) => l).filter((l) => row(opts.vectors, l).some((x) => x !== 0));
  if (layers.length === 0) throw new PersonaError("E_BAD_INPUT", "the trait's vectors are zero at every layer");
  const probes = model.probes(layers.map((l) => ({ layer: l, vector: Float32Array.from(row(opts.vectors, l)) })));

  const config = {
    model: { name: model.info.name, hash: await fingerprintFile(model.info.path) },
    trait: opts.trait.name,
    rubric: hashOf(opts.trait.eval.eval_prompt),
    judge: opts.judge.id,
    vectors: { source: opts.vectorsSource ?? null, hash: hashOf(Array.from(opts.vectors.data)) },
    prompts: hashOf(opts.prompts),
    // Replies are generated with exact numerics, which their batch changes only by float rounding,
    // so neither --chunk nor a resume (which generates only the missing replies) changes them in
    // practice (0 of 2240 demo-model replies differed).
    exact: true,
    samples,
    temperature,
    maxTokens,
    seed,
  };
  const run = await RunDir.open(opts.runDir, "monitor", config, { restart: opts.restart });
  const log = await run.records<ReplyRecord>("rollouts.jsonl");
  try {
    const encoded = await Promise.all(opts.prompts.map((p) => model.encodeChat(p.messages)));
    // The whole prompt as the "prompt": its last token is the one monitored, before any reply exists.
    const projected = await model.project(
      encoded.map((tokens) => ({ tokens, promptLength: tokens.length })),
      probes,
      { signal: opts.signal },
    );

    const all: { key: string; p: number; k: number }[] = [];
    for (let p = 0; p < opts.prompts.length; p++) for (let k = 0; k < samples; k++) all.push({ key: `${p}/${k}`, p, k });
    const storedBefore = new Set(all.filter((t) => log.has(t.key)).map((t) => t.key));
    const total = all.length;
    let judged = storedBefore.size;
    opts.onProgress?.({ judged, total });
    const stats = await runJudgedRollouts(
      model,
      all.map((t) => ({ key: t.key, messages: opts.prompts[t.p]!.messages, seed: requestSeed(seed, t.p * samples + t.k) })),
      {
        name: "monitor",
        judge: opts.judge,
        judgeSpec: opts.judgeSpec ?? opts.judge.id,
        rubric: { trait: opts.trait.name, rubric: opts.trait.eval.eval_prompt },
        sampling: { temperature, maxTokens, exact: true },
        judgeConcurrency: opts.judgeConcurrency ?? 16,
        shardSize: opts.shardRequests ?? total,
        stored: (i) => storedBefore.has(all[i]!.key),
        runner: opts.runner,
        signal: opts.signal,
        onReply: async (i, r) => {
          await log.append(all[i]!.key, { text: r.text, trait: r.trait, coherence: r.coherence });
          opts.onProgress?.({ judged: ++judged, total });
        },
      },
    );
    const stored = Array.from({ length: total }, (_, i) => log.get(`${Math.floor(i / samples)}/${i % samples}`)!);
    if (stored.every((r) => r.trait === null && r.coherence === null)) throw judgeScoredNothing(opts.judge.id, total);

    const points: MonitorPoint[] = opts.prompts.map((prompt, p) => {
      const replies = Array.from({ length: samples }, (_, k) => log.get(`${p}/${k}`)!);
      const projections: (number | null)[] = new Array(nLayer + 1).fill(null);
      layers.forEach((l, i) => (projections[l] = projected[p]!.promptLast[i]!));
      return {
        messages: prompt.messages,
        group: prompt.group ?? null,
        level: prompt.level ?? null,
        projections,
        traitScore: mean(replies.map((r) => r.trait)),
        coherence: mean(replies.map((r) => r.coherence)),
        replies,
      };
    });
    const scored = points.filter((pt) => pt.traitScore !== null);
    const perLayer = Array.from({ length: nLayer + 1 }, (_, l) => ({
      layer: l,
      pearsonR: layers.includes(l) ? pearson(scored.map((pt) => pt.projections[l]!), scored.map((pt) => pt.traitScore!)) : null,
    }));
    const best = perLayer.reduce<(typeof perLayer)[number] | null>((b, x) => (x.pearsonR !== null && (b === null || x.pearsonR > b.pearsonR!) ? x : b), null);
    const layer = opts.layer ?? best?.layer ?? layers[layers.length - 1]!;
    return { trait: opts.trait.name, perLayer, layer, pearsonR: perLayer[layer]!.pearsonR, points, resumed: run.resumed, shards: stats };
  } finally {
    await log.close();
  }
}

/** The `persona monitor --json` contract (also `monitor.json`). */
export function monitorJson(r: MonitorResult, vectors: string) {
  return {
    trait: r.trait,
    vectors,
    layer: r.layer,
    pearson_r: r.pearsonR,
    per_layer: r.perLayer.map((x) => ({ layer: x.layer, pearson_r: x.pearsonR })),
    points: r.points.map((p) => ({
      messages: p.messages,
      projection: p.projections[r.layer] ?? null,
      trait_score: p.traitScore,
      coherence: p.coherence,
      level: p.level,
      group: p.group,
    })),
  };
}

/** Writes `monitor.json` (the `persona monitor --json` contract) and `monitor.html` into `dir`. */
export async function writeMonitorReport(dir: string, r: MonitorResult, meta: MonitorReportMeta): Promise<{ html: string; json: string }> {
  const json = path.join(dir, "monitor.json");
  const html = path.join(dir, "monitor.html");
  await writeFileAtomic(json, `${JSON.stringify(monitorJson(r, meta.vectors), null, 2)}\n`);
  await writeFileAtomic(html, monitorHtml(r, meta));
  return { html, json };
}

/** Reads a prompts file: one `{"messages": [...], "level"?, "group"?}` per line, refused whole (with line numbers) when a line is broken. */
export async function readMonitorPrompts(file: string): Promise<MonitorPrompt[]> {
  const out: MonitorPrompt[] = [];
  const problems: string[] = [];
  if (!existsSync(file)) throw new PersonaError("E_NOT_FOUND", `${file} does not exist`);
  for await (const { line, text } of readInputLines(file)) {
    try {
      const v = JSON.parse(text) as { messages?: unknown; level?: unknown; group?: unknown } | null;
      const bad = (why: string) => new PersonaError("E_BAD_FORMAT", why);
      if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad("not a JSON object");
      const m = v.messages;
      if (!Array.isArray(m) || m.length === 0) throw bad("needs a non-empty messages list");
      validateMessages(m as ChatMessage[]);
      if ((m[m.length - 1] as ChatMessage).role === "assistant") throw bad("must end before the assistant's reply");
      if (v.level !== undefined && typeof v.level !== "number") throw bad("level must be a number");
      if (v.group !== undefined && typeof v.group !== "string") throw bad("group must be a string");
      out.push({
        messages: (m as ChatMessage[]).map((x) => ({ role: x.role, content: x.content })),
        ...(v.level !== undefined && { level: v.level as number }),
        ...(v.group !== undefined && { group: v.group as string }),
      });
    } catch (e) {
      problems.push(`  line ${line}: ${e instanceof SyntaxError ? "not valid JSON" : (e as Error).message}`);
    }
  }
  if (problems.length) throw new PersonaError("E_BAD_FORMAT", `${file} has broken prompts:\n${problems.slice(0, 10).join("\n")}`);
  return out;
}
