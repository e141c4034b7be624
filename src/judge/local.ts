/**
 * A GGUF model run by our own engine as the judge. It scores every integer 0..100 as a token
 * sequence after the judge prompt — the tokens may split digits, as Qwen's and many others do —
 * all in one prefix-tree pass (Model.scoreTree), so P(n) is exact rather than read off a first
 * token: P(n) = P(tokens of n | prompt) · P(no digit follows). The score is Σ n·P(n) / Σ P(n),
 * null when Σ P(n) is under the minimum mass, as for the OpenAI-compatible judge.
 */
import path from "node:path";
import { resolveModelRef } from "../hub/resolve.js";
import { Engine } from "../engine/Engine.js";
import type { Model } from "../engine/Model.js";
import { judgePrompt } from "./prompts.js";
import type { Judge, JudgeInput } from "./types.js";

export interface LocalJudgeOptions {
  /** Least probability mass on the numbers 0..100 before the score is null. Defaults to 0.25. */
  minProbabilityMass?: number;
  /** CPU threads of the judge's own engine. Defaults to the engine's default (free cores). */
  threads?: number;
  /**
   * Load the judge model into this engine (kept open) instead of starting one of its own: judging
   * goes on between the decode steps of the engine's other models, so it never waits for a run.
   */
  engine?: Engine;
}

export class LocalJudge implements Judge {
  readonly id: string;
  private numbers: Int32Array[] | undefined;

  private constructor(
    private readonly engine: Engine | null,
    private readonly model: Model,
    private readonly minMass: number,
    /** The judge loaded `model` (into a shared engine) and frees it on dispose. */
    private readonly ownsModel = engine !== null,
  ) {
    this.id = `local:${path.basename(model.info.path)}`;
  }

  /** Loads `modelPath` (or `demo`) into `opts.engine`, or else into an engine of its own. */
  static async open(modelPath: string, opts: LocalJudgeOptions = {}): Promise<LocalJudge> {
    if (opts.engine) {
      const model = await opts.engine.loadModel(await resolveModelRef(modelPath));
      return new LocalJudge(null, model, opts.minProbabilityMass ?? 0.25, true);
    }
    const engine = await Engine.create(opts.threads !== undefined ? { threads: opts.threads } : {});
    try {
      const model = await engine.loadModel(await resolveModelRef(modelPath));
      return new LocalJudge(engine, model, opts.minProbabilityMass ?? 0.25);
    } catch (e) {
      await engine.dispose();
      throw e;
    }
  }

  /** Judges with a model the caller loaded and keeps (it is not disposed with the judge). */
  static fromModel(model: Model, opts: LocalJudgeOptions = {}): LocalJudge {
    return new LocalJudge(null, model, opts.minProbabilityMass ?? 0.25);
  }

  async score(input: JudgeInput): Promise<number | null> {
    const prompt = await this.model.encodeChat([{ role: "user", content: judgePrompt(input) }], { addGenerationPrompt: true });
    const scores = await this.model.scoreTree(prompt, await this.numberPaths());
    let mass = 0;
    let weighted = 0;
    scores.forEach((s, n) => {
      const p = Math.exp(s.logprob) * (1 - s.digitNext);
      mass += p;
      weighted += n * p;
    });
    return mass < this.minMass || mass === 0 ? null : weighted / mass;
  }

  private async numberPaths(): Promise<Int32Array[]> {
    this.numbers ??= await Promise.all(Array.from({ length: 101 }, (_, n) => this.model.tokenize(String(n), { addSpecial: false })));
    return this.numbers;
  }

  async dispose(): Promise<void> {
    if (this.ownsModel) await this.model.dispose();
    await this.engine?.dispose();
  }
}
