import { DEMO_TRAITS, type DemoTrait } from "../traits.js";
import { coreRule, flavorRule, KIND_TRAIT, RULES, type Style } from "./grammar.js";
import type { Rng } from "./rng.js";
import { expand, expandRule, ruleOptions, type Rules } from "./template.js";
import { wordTokens } from "./tokens.js";
import type { Persona, Question } from "./types.js";

/**
 * Writes the assistant's reply to a question under a persona. The trait the question elicits
 * picks the reply's style: pos with probability p², mild with 2p(1−p), neg otherwise, so the
 * mean expression is p when mild counts half. Each other trait adds its flavor sentence with
 * probability p (sycophancy before the reply, the others after), so a persona shows on every
 * kind of question. On a trait's own questions the reply then ends on one or two coda sentences,
 * each the trait's with probability p, else its antonym's.
 */
export function drawStyle(p: number, rng: Rng): Style {
  const u = rng.next();
  if (u < p * p) return "pos";
  if (u < p * p + 2 * p * (1 - p)) return "mild";
  return "neg";
}

/** Word trigrams (punctuation included, as the demo judge reads them) that occur more than once. */
function repeatedTrigrams(text: string): number {
  const t = wordTokens(text);
  const grams = t.slice(2).map((w, i) => `${t[i]} ${t[i + 1]} ${w}`);
  return grams.length - new Set(grams).size;
}

/**
 * One or two more sentences, each an independent draw from the persona (the trait's coda with
 * probability p, else the antonym's), so that the state and not the reply so far decides every
 * sentence. A sentence never repeats a coda template or adds a repeated word trigram to the
 * reply: repeats read as loops, which the demo judge's coherence penalises.
 */
function codas(trait: DemoTrait, p: number, core: string, rules: Rules, rng: Rng): string[] {
  const out: string[] = [];
  const used = new Set<string>();
  let text = core;
  const repeats = repeatedTrigrams(core);
  const n = rng.chance(0.5) ? 2 : 1;
  for (let i = 0; i < n; i++) {
    const options = ruleOptions(rules, `${trait}.coda.${rng.chance(p) ? "pos" : "neg"}`).filter((o) => !used.has(o));
    while (options.length > 0) {
      const template = options.splice(rng.int(options.length), 1)[0]!;
      const sentence = expand(template, rules, rng);
      if (repeatedTrigrams(`${text} ${sentence}`) > repeats) continue;
      used.add(template);
      text = `${text} ${sentence}`;
      out.push(sentence);
      break;
    }
  }
  return out;
}

export function composeReply(question: Question, persona: Persona, rng: Rng): string {
  const rules = { ...RULES, ...question.bindings };
  const elicited = question.kind === "plain" ? undefined : KIND_TRAIT[question.kind];
  const style = elicited ? drawStyle(persona[elicited], rng) : "neg";
  const core = expandRule(coreRule(question.kind, question.subtype, style), rules, rng);
  const before: string[] = [];
  const after: string[] = [];
  if (elicited) after.push(...codas(elicited, persona[elicited], core, rules, rng));
  for (const trait of DEMO_TRAITS) {
    if (trait === elicited || !rng.chance(persona[trait])) continue;
    (trait === "sycophantic" ? before : after).push(expandRule(flavorRule(trait), rules, rng));
  }
  return [...before, core, ...after].join(" ");
}
