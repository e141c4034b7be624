import { DEMO_TRAITS } from "../traits.js";
import { coreRule, flavorRule, KIND_TRAIT, RULES, type Style } from "./grammar.js";
import type { Rng } from "./rng.js";
import { expandRule } from "./template.js";
import type { Persona, Question } from "./types.js";

/**
 * Writes the assistant's reply to a question under a persona. The trait the question elicits
 * picks the reply's style: pos with probability p², mild with 2p(1−p), neg otherwise, so the
 * mean expression is p when mild counts half. Each other trait adds its flavor sentence with
 * probability p (sycophancy before the reply, the others after), so a persona shows on every
 * kind of question.
 */
export function drawStyle(p: number, rng: Rng): Style {
  const u = rng.next();
  if (u < p * p) return "pos";
  if (u < p * p + 2 * p * (1 - p)) return "mild";
  return "neg";
}

export function composeReply(question: Question, persona: Persona, rng: Rng): string {
  const rules = { ...RULES, ...question.bindings };
  const elicited = question.kind === "plain" ? undefined : KIND_TRAIT[question.kind];
  const style = elicited ? drawStyle(persona[elicited], rng) : "neg";
  const core = expandRule(coreRule(question.kind, question.subtype, style), rules, rng);
  const before: string[] = [];
  const after: string[] = [];
  for (const trait of DEMO_TRAITS) {
    if (trait === elicited || !rng.chance(persona[trait])) continue;
    (trait === "sycophantic" ? before : after).push(expandRule(flavorRule(trait), rules, rng));
  }
  return [...before, core, ...after].join(" ");
}
