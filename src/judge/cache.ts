import { createHash } from "node:crypto";
import { mkdir, open, readFile, truncate, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { PersonaError } from "../errors.js";
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
  private readonly syncEvery: number;
  private unsynced = 0;
  /** Appends run one after another so lines never interleave. */
  private writes: Promise<void> = Promise.resolve();
  private closed = false;
  /** Calls answered from the file or from a coalesced call, for reports and tests. */
  hits = 0;

  private constructor(
    private readonly inner: Judge,
    private readonly file: string,
    private readonly fh: FileHandle,
    scores: Map<string, number | null>,
    opts: CachedJudgeOptions,
  ) {
    this.id = inner.id;
    this.scores = scores;
    this.syncEvery = opts.syncEvery ?? 32;
  }

  /** Opens (or creates) the cache file, dropping a torn last line left by a crash. */
  static async open(inner: Judge, file: string, opts: CachedJudgeOptions = {}): Promise<CachedJudge> {
    await mkdir(path.dirname(file), { recursive: true });
    const scores = await loadCache(file);
    const fh = await open(file, "a");
    return new CachedJudge(inner, file, fh, scores, opts);
  }

  /** Number of cached scores. */
  get size(): number {
    return this.scores.size;
  }

  async score(input: JudgeInput, signal?: AbortSignal): Promise<number | null> {
    if (this.closed) throw new PersonaError("E_DISPOSED", `judge cache ${this.file} is closed`);
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
    await this.append(`${JSON.stringify(line)}\n`);
    return score;
  }

  private append(text: string): Promise<void> {
    const write = this.writes.then(async () => {
      await this.fh.write(text);
      if (++this.unsynced >= this.syncEvery) await this.sync();
    });
    // Keep the chain alive after a failed write; the failing caller still sees its error.
    this.writes = write.catch(() => undefined);
    return write;
  }

  private async sync(): Promise<void> {
    if (this.unsynced === 0) return;
    this.unsynced = 0;
    await this.fh.datasync();
  }

  /** Waits for pending appends and fsyncs them. */
  async flush(): Promise<void> {
    await this.writes;
    await this.sync();
  }

  async dispose(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled(this.inFlight.values());
    await this.flush();
    await this.fh.close();
  }
}

/**
 * Reads every complete line. A last line without its newline is a write cut short by a crash: it
 * is dropped and cut from the file, so the next append starts on a fresh line. A bad line
 * anywhere else means the file was damaged some other way, and that is reported, not skipped.
 */
async function loadCache(file: string): Promise<Map<string, number | null>> {
  const scores = new Map<string, number | null>();
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return scores;
    throw e;
  }
  const end = text.lastIndexOf("\n") + 1;
  if (end < text.length) await truncate(file, Buffer.byteLength(text.slice(0, end), "utf8"));
  const lines = text.slice(0, end).split("\n");
  lines.pop();
  lines.forEach((line, i) => {
    if (line.trim() === "") return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      parsed = undefined;
    }
    if (!isCacheLine(parsed)) throw new PersonaError("E_BAD_FORMAT", `${file}:${i + 1} is not a judge cache record`);
    scores.set(parsed.key, parsed.score);
  });
  return scores;
}
