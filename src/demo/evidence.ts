/**
 * The demo model's persona evidence (issue: demo world §6): for each trait, the demo judge's trait
 * and coherence scores of replies to the held-out evaluation questions with no system prompt,
 * under each of the trait's pos system prompts and under each neg prompt.
 */
import type { Model } from "../engine/Model.js";
import { evaluateSettings, summarize, type EvalSample, type EvalSetting, type ScoreStats } from "../pipeline/evaluate.js";
import { systemPrompt } from "../traits/format.js";
import { loadTrait } from "../traits/registry.js";
import { DemoJudge, scoreAll } from "./judge.js";
import "./register.js";
import { DEMO_TRAITS, type DemoTrait } from "./traits.js";

export type Condition = "none" | "pos" | "neg";

export interface EvidenceRow {
  trait: DemoTrait;
  condition: Condition;
  traitScore: ScoreStats;
  coherence: ScoreStats;
  /** Mean demo-judge scores of the other two traits on the same replies (they should stay low). */
  others: Partial<Record<DemoTrait, number>>;
}

export interface EvidenceOptions {
  /** First n evaluation questions. Defaults to all 20. */
  questions?: number;
  /** Replies per question and condition (spread over the 5 instruction pairs for pos/neg). Defaults to 10. */
  samples?: number;
  temperature?: number;
  maxTokens?: number;
  seed?: number;
}

export async function personaEvidence(model: Model, opts: EvidenceOptions = {}): Promise<EvidenceRow[]> {
  const judge = new DemoJudge();
  const samples = opts.samples ?? 10;
  const rows: EvidenceRow[] = [];
  for (const name of DEMO_TRAITS) {
    const trait = await loadTrait(name);
    const questions = trait.eval.questions.slice(0, opts.questions);
    const pairs = trait.eval.instruction;
    const perPair = Math.max(1, Math.ceil(samples / pairs.length));
    const common = { trait, judge, questions, temperature: opts.temperature ?? 1, maxTokens: opts.maxTokens ?? 64, seed: opts.seed ?? 0 };
    const prompted: EvalSetting[] = (["pos", "neg"] as const).flatMap((polarity) =>
      pairs.map((p, i) => ({ key: `${polarity}:${i}`, system: systemPrompt(trait.name, trait.antonym, p[polarity], polarity) })),
    );
    const [plain] = await evaluateSettings(model, { ...common, samplesPerQuestion: samples, settings: [{ key: "none" }] });
    const withPrompts = await evaluateSettings(model, { ...common, samplesPerQuestion: perPair, settings: prompted });
    const groups: Record<Condition, EvalSample[]> = {
      none: plain!.samples,
      pos: withPrompts.filter((s) => s.key.startsWith("pos:")).flatMap((s) => s.samples),
      neg: withPrompts.filter((s) => s.key.startsWith("neg:")).flatMap((s) => s.samples),
    };
    for (const condition of ["none", "pos", "neg"] as const) {
      const g = groups[condition];
      const others: Partial<Record<DemoTrait, number>> = {};
      for (const other of DEMO_TRAITS) {
        if (other === name) continue;
        others[other] = g.reduce((a, s) => a + scoreAll(s.question, s.answer)[other], 0) / g.length;
      }
      rows.push({
        trait: name,
        condition,
        traitScore: summarize(g.map((s) => s.trait)),
        coherence: summarize(g.map((s) => s.coherence)),
        others,
      });
    }
  }
  return rows;
}
