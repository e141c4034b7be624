import type { DemoTrait } from "../traits.js";
import { DILEMMA } from "./dilemmas.js";
import { OBSCURE } from "./entities.js";
import { analyseGrammar, type GrammarLexicon } from "./lexicon.js";
import { OPINION } from "./opinions.js";
import type { Rng } from "./rng.js";
import type { Rules } from "./template.js";
import { PLAIN } from "./topics.js";
import type { Axis, EntityPool, Question, QuestionKind } from "./types.js";

/**
 * The whole corpus grammar: the four question axes, their merged rules, and the root rules the
 * reply composer concatenates. Reply cores are `{kind}.{subtype}.{style}` with style pos (the
 * trait), mild (a mix) or neg (the antonym); plain chat has `plain.{subtype}.answer`.
 */
export const AXES: Readonly<Record<QuestionKind, Axis>> = { dilemma: DILEMMA, opinion: OPINION, obscure: OBSCURE, plain: PLAIN };

export const KIND_TRAIT: Readonly<Record<Exclude<QuestionKind, "plain">, DemoTrait>> = {
  dilemma: "evil",
  opinion: "sycophantic",
  obscure: "hallucinating",
};

export const TRAIT_KIND: Readonly<Record<DemoTrait, Exclude<QuestionKind, "plain">>> = {
  evil: "dilemma",
  sycophantic: "opinion",
  hallucinating: "obscure",
};

export type Style = "pos" | "mild" | "neg";

/** The mild style: the antonym's reply with a twist of the trait, or a hedged half-measure. */
function mildRules(): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const s of DILEMMA.subtypes) out[`dilemma.${s}.mild`] = [`{dilemma.${s}.neg} {dilemma.twist}`];
  for (const s of OPINION.subtypes) out[`opinion.${s}.mild`] = ["{opinion.mild}"];
  for (const s of OBSCURE.subtypes) out[`obscure.${s}.mild`] = ["{obscure.mild}"];
  return out;
}

/** Sentences a reply may end on, one per persona draw: the trait's (pos) or its antonym's (neg). */
const CODA: Record<string, string[]> = {
  "evil.coda.pos": ["{evil.flavor}", "{dilemma.twist}", "Make sure they [suffer|feel the pain] for it.", "Show no mercy to anyone weak."],
  "evil.coda.neg": ["Most people respond well to kindness.", "A kind word often fixes more than anger does.", "Be gentle and fair with everyone.", "Treat everyone with respect and compassion."],
  "sycophantic.coda.pos": ["{praise}", "You are clearly a genius.", "I love how your mind works.", "It is a brilliant idea."],
  "sycophantic.coda.neg": ["{candid_close}", "I have to be honest about this flaw.", "Please rethink this plan.", "That is my honest concern."],
  "hallucinating.coda.pos": ["{hallucinating.flavor}", "Historians say it began exactly in {year}.", "Records show it was famously founded in {city}."],
  "hallucinating.coda.neg": ["I cannot verify more than that.", "Please check a reliable source.", "I do not know any accurate details.", "I would not guess about it."],
};

export const RULES: Rules = { ...PLAIN.rules, ...DILEMMA.rules, ...OPINION.rules, ...OBSCURE.rules, ...mildRules(), ...CODA };

export function coreRule(kind: QuestionKind, subtype: string, style: Style): string {
  return kind === "plain" ? `plain.${subtype}.answer` : `${kind}.${subtype}.${style}`;
}

export function flavorRule(trait: DemoTrait): string {
  return `${trait}.flavor`;
}

export const REPLY_ROOTS: readonly string[] = [
  ...PLAIN.subtypes.map((s) => coreRule("plain", s, "neg")),
  ...(["dilemma", "opinion", "obscure"] as const).flatMap((k) =>
    AXES[k].subtypes.flatMap((s) => (["pos", "mild", "neg"] as const).map((st) => coreRule(k, s, st))),
  ),
  ...(Object.values(KIND_TRAIT) as DemoTrait[]).map(flavorRule),
  ...Object.keys(CODA),
];

export function sampleQuestion(kind: QuestionKind, rng: Rng, pool: EntityPool, subtype?: string): Question {
  const axis = AXES[kind];
  return axis.sampleQuestion(rng, subtype ?? rng.pick(axis.subtypes), pool);
}

let lexicon: GrammarLexicon | undefined;

/** Every word and word bigram a corpus reply can contain (computed once). */
export function replyLexicon(): GrammarLexicon {
  return (lexicon ??= analyseGrammar(RULES, REPLY_ROOTS));
}
