import type { DemoTrait } from "../traits.js";
import type { Rng } from "./rng.js";
import type { Rules } from "./template.js";

/** Which trait a question kind elicits; plain chat elicits none. */
export type QuestionKind = "dilemma" | "opinion" | "obscure" | "plain";

/** Training questions use one set of made-up entity names, held-out questions a disjoint one. */
export type EntityPool = "train" | "heldout";

export interface Question {
  kind: QuestionKind;
  subtype: string;
  text: string;
  /** Rule overrides fixed by the question (its topic, item, entity), one option each, for the reply. */
  bindings: Record<string, readonly string[]>;
}

/** One family of questions with the grammar its replies are written in. */
export interface Axis {
  kind: QuestionKind;
  subtypes: readonly string[];
  /** Every rule the axis' questions and replies use; bound names hold all their possible values. */
  rules: Rules;
  sampleQuestion(rng: Rng, subtype: string, pool: EntityPool): Question;
}

/** A fixed pair of texts, chosen together (a claim and its problem, a work and its flaw). */
export interface Item {
  topic: string;
  text: string;
  problem: string;
}

/** How strongly the reply should express each trait, 0 (the antonym) to 1 (the trait). */
export type Persona = Record<DemoTrait, number>;
