/**
 * Judging replies while generation goes on, the one way the pipelines overlap the two: a reply is
 * handed to the pool as soon as it exists, its trait and coherence scores are asked for with at
 * most `concurrency` judge calls in flight, and the first failure stops new calls, is reported
 * once (so the caller can stop generating) and is thrown by `drain`.
 */
import type { Model } from "../engine/Model.js";
import type { GenerateOptions, GenerateRequest, GenerationResult } from "../engine/types.js";
import { PersonaError } from "../errors.js";
import { type Limit, limiter } from "../judge/limit.js";
import type { Judge, JudgeInput } from "../judge/types.js";

/** One reply's scores, as stored in `judgements.jsonl` and the other run records. */
export interface Judgement {
  trait: number | null;
  coherence: number | null;
}

/** The trait metric a pool scores: the trait's name and the rubric (extraction's or evaluation's). */
export interface TraitRubric {
  trait: string;
  rubric: string;
}

export interface JudgePoolOptions {
  /** Judge calls in flight at once. */
  concurrency: number;
  /** Aborts the calls in flight. */
  signal?: AbortSignal;
  /** Called once, with the first failure. */
  onError?(e: unknown): void;
}

export class JudgePool {
  private readonly limit: Limit;
  private readonly tasks = new Set<Promise<void>>();
  /** The first failure; no judge call starts once it is set. */
  error: unknown;

  constructor(
    private readonly judge: Judge,
    private readonly rubric: TraitRubric,
    private readonly opts: JudgePoolOptions,
  ) {
    if (!Number.isInteger(opts.concurrency) || opts.concurrency < 1) {
      throw new PersonaError("E_BAD_INPUT", `judge concurrency must be a positive integer, got ${opts.concurrency}`);
    }
    this.limit = limiter(opts.concurrency);
  }

  /** Scores one reply and hands the judgement to `done` (awaited before the task counts as finished). */
  submit(question: string, answer: string, done: (j: Judgement) => Promise<void> | void): void {
    const task = (async () => {
      const [trait, coherence] = await Promise.all([
        this.call({ question, answer, metric: { kind: "trait", trait: this.rubric.trait, rubric: this.rubric.rubric } }),
        this.call({ question, answer, metric: { kind: "coherence" } }),
      ]);
      await done({ trait, coherence });
    })().catch((e: unknown) => this.fail(e));
    this.tasks.add(task);
    void task.finally(() => this.tasks.delete(task));
  }

  /** Waits for every submitted task; throws the first failure. */
  async drain(): Promise<void> {
    while (this.tasks.size > 0) await Promise.all([...this.tasks]);
    if (this.error !== undefined) throw this.error;
  }

  private fail(e: unknown): void {
    if (this.error !== undefined) return;
    this.error = e instanceof PersonaError ? e : new PersonaError("E_JUDGE", `judge ${this.judge.id} failed: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    this.opts.onError?.(this.error);
  }

  private call(input: JudgeInput): Promise<number | null> {
    return this.limit(async () => {
      if (this.error !== undefined) throw this.error;
      return this.judge.score(input, this.opts.signal);
    });
  }
}

/**
 * Generates `requests` and judges each reply as soon as it finishes; `onJudged` gets the request's
 * index, its text and scores. The first failure (generation, judge or `onJudged`) stops both and
 * is thrown.
 */
export async function generateAndJudge(
  model: Model,
  requests: readonly GenerateRequest[],
  opts: GenerateOptions & {
    judge: Judge;
    rubric: TraitRubric;
    judgeConcurrency: number;
    signal?: AbortSignal;
    /** The question a request's reply answers (what the judge is shown). */
    questionOf(index: number): string;
    onGenerated?(r: GenerationResult): void;
    onJudged(index: number, answer: string, j: Judgement): Promise<void> | void;
  },
): Promise<void> {
  const { judge, rubric, judgeConcurrency, questionOf, onGenerated, onJudged, ...generateOptions } = opts;
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  const pool = new JudgePool(judge, rubric, { concurrency: judgeConcurrency, signal, onError: () => stop.abort() });
  try {
    await model.generate(requests, {
      ...generateOptions,
      signal,
      onResult: (r) => {
        onGenerated?.(r);
        pool.submit(questionOf(r.index), r.text, (j) => onJudged(r.index, r.text, j));
      },
    });
  } catch (e) {
    stop.abort();
    await pool.drain().catch(() => undefined);
    throw pool.error ?? e;
  }
  await pool.drain();
}
