/**
 * Judging rollouts as they arrive: a trait score (the trait's extraction rubric) and a coherence
 * score per rollout, at most `concurrency` judge calls at once. The first failure stops new calls
 * and is reported once everything in flight has settled.
 */
import { type Limit, limiter } from "../../judge/limit.js";
import type { Judge, JudgeInput } from "../../judge/types.js";
import { PersonaError } from "../../errors.js";
import type { TraitDefinition } from "../../traits/format.js";

/** One rollout's scores as stored in `judgements.jsonl`. */
export interface Judgement {
  trait: number | null;
  coherence: number | null;
}

export class JudgePool {
  private readonly limit: Limit;
  private readonly tasks = new Set<Promise<void>>();
  /** The first failure; later tasks are not started once it is set. */
  error: unknown;

  constructor(
    private readonly judge: Judge,
    private readonly concurrency: number,
    private readonly onError: (e: unknown) => void,
    private readonly signal?: AbortSignal,
  ) {
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new PersonaError("E_BAD_INPUT", `judge concurrency must be a positive integer, got ${concurrency}`);
    }
    this.limit = limiter(concurrency);
  }

  /** Scores one rollout and hands the judgement to `done` (awaited before the task counts as finished). */
  submit(trait: TraitDefinition, question: string, answer: string, done: (j: Judgement) => Promise<void>): void {
    const traitInput: JudgeInput = { question, answer, metric: { kind: "trait", trait: trait.name, rubric: trait.extract.eval_prompt } };
    const coherenceInput: JudgeInput = { question, answer, metric: { kind: "coherence" } };
    const task = (async () => {
      const [t, c] = await Promise.all([this.call(traitInput), this.call(coherenceInput)]);
      await done({ trait: t, coherence: c });
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
    this.onError(this.error);
  }

  private call(input: JudgeInput): Promise<number | null> {
    return this.limit(async () => {
      if (this.error !== undefined) throw this.error;
      return this.judge.score(input, this.signal);
    });
  }
}
