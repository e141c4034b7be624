import { createHash } from "node:crypto";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { PersonaError } from "../errors.js";
import { JsonlLog, readJsonl } from "../store/jsonl.js";
import type { Judge, JudgeInput, JudgeMetric } from "./types.js";

/**
 * Answers repeated (judge, metric, question, answer) calls from an append-only JSONL file, so a
 * resumed run never pays for a judge call twice, and coalesces identical calls in flight.
 * Each line: `{"key": sha256, "judge": id, "metric": "trait:evil" | "coherence", "score": n | null}`.
 */
export interface CachedJudgeOptions {
  /** fsync after this many appended lines (and always on `flush`/`dispose`). Defaults to 32. */
  syncEvery?: number;
}

interface CacheLine {
  key: string;
  judge: string;
  metric: string;
  score: number | null;
}

function metricLabel(metric: JudgeMetric): string {
  return metric.kind === "trait" ? `trait:${metric.trait}` : "coherence";
}

/** The rubric text is part of the key: editing a rubric must not reuse scores from the old one. */
export function cacheKey(judgeId: string, input: JudgeInput): string {
  const metric = input.metric.kind === "trait" ? ["trait", input.metric.trait, input.metric.rubric] : ["coherence"];
  return createHash("sha256").update(JSON.stringify([judgeId, metric, input.question, input.answer])).digest("hex");
}

function isCacheLine(v: unknown): v is CacheLine {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return typeof o.key === "string" && (o.score === null || (typeof o.score === "number" && Number.isFinite(o.score)));
}

export class CachedJudge implements Judge {
  readonly id: string;
  private readonly scores: Map<string, number | null>;
  private readonly inFlight = new Map<string, Promise<number | null>>();
  private closed = false;
  /** Calls answered from the file or from a coalesced call, for reports and tests. */
  hits = 0;

  private constructor(
    private readonly inner: Judge,
    private readonly log: JsonlLog,
    scores: Map<string, number | null>,
  ) {
    this.id = inner.id;
    this.scores = scores;
  }

  /** Opens (or creates) the cache file; a torn last line left by a crash is dropped (store/jsonl.ts). */
  static async open(inner: Judge, file: string, opts: CachedJudgeOptions = {}): Promise<CachedJudge> {
    await mkdir(path.dirname(file), { recursive: true });
    const scores = new Map<string, number | null>();
    const parse = (v: unknown, line: number): CacheLine => {
      if (!isCacheLine(v)) throw new PersonaError("E_BAD_FORMAT", `${file}:${line} is not a judge cache record`);
      return v;
    };
    for await (const rec of readJsonl(file, parse)) scores.set(rec.key, rec.score);
    return new CachedJudge(inner, await JsonlLog.open(file, { syncEvery: opts.syncEvery ?? 32 }), scores);
  }

  /** Number of cached scores. */
  get size(): number {
    return this.scores.size;
  }

  async score(input: JudgeInput, signal?: AbortSignal): Promise<number | null> {
    if (this.closed) throw new PersonaError("E_DISPOSED", `judge cache ${this.log.file} is closed`);
    const key = cacheKey(this.id, input);
    for (;;) {
      if (this.scores.has(key)) {
        this.hits++;
        return this.scores.get(key) ?? null;
      }
      const pending = this.inFlight.get(key);
      if (!pending) break;
      try {
        const score = await pending;
        this.hits++;
        return score;
      } catch (e) {
        // The call we joined was cancelled by its own caller: run it ourselves unless we were cancelled too.
        if (e instanceof PersonaError && e.code === "E_ABORTED" && !signal?.aborted) continue;
        throw e;
      }
    }
    const call = this.fetchAndStore(key, input, signal);
    this.inFlight.set(key, call);
    try {
      return await call;
    } finally {
      this.inFlight.delete(key);
    }
  }

  private async fetchAndStore(key: string, input: JudgeInput, signal?: AbortSignal): Promise<number | null> {
    const score = await this.inner.score(input, signal);
    this.scores.set(key, score);
    const line: CacheLine = { key, judge: this.id, metric: metricLabel(input.metric), score };
    await this.log.append([line]);
    return score;
  }

  /** Waits for pending appends and fsyncs them. */
  flush(): Promise<void> {
    return this.log.sync();
  }

  async dispose(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled(this.inFlight.values());
    await this.log.close();
  }
}
