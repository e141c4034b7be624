/**
 * Extraction rollouts (spec §2): for every instruction pair i × extraction question j × rollout r,
 * one reply under the pos system prompt and one under the neg. Each rollout has a key
 * `pos/i/j/r` and a seed derived from (seed, polarity, i, j, r) alone, so with exact numerics a
 * re-run reproduces it whatever the batch it lands in or how many rollouts came before it.
 */
import { createHash } from "node:crypto";
import type { ChatMessage } from "../../engine/types.js";
import { systemPrompt, type Polarity, type TraitDefinition } from "../../traits/format.js";

export const POLARITIES: readonly Polarity[] = ["pos", "neg"];

export interface RolloutItem {
  key: string;
  polarity: Polarity;
  /** Instruction pair index. */
  pair: number;
  /** Extraction question index. */
  question: number;
  /** Rollout number within (pair, question, polarity). */
  rollout: number;
  seed: number;
}

/** One finished rollout as stored in `rollouts.jsonl`. */
export interface RolloutRecord {
  text: string;
  /** Generated tokens. */
  tokens: number;
  finish: "stop" | "length";
}

export function rolloutKey(polarity: Polarity, pair: number, question: number, rollout: number): string {
  return `${polarity}/${pair}/${question}/${rollout}`;
}

/** An independent 32-bit sampling seed per rollout. */
export function rolloutSeed(seed: number, polarity: Polarity, pair: number, question: number, rollout: number): number {
  return createHash("sha256").update(`${seed}/${rolloutKey(polarity, pair, question, rollout)}`).digest().readUInt32LE(0);
}

/** Filter rows, in the order pos and neg scores are aligned: pair, then question, then rollout. */
export interface RolloutRow {
  pair: number;
  question: number;
  rollout: number;
  pos: string;
  neg: string;
}

export function rolloutRows(trait: TraitDefinition, rollouts: number): RolloutRow[] {
  const rows: RolloutRow[] = [];
  trait.extract.instruction.forEach((_, i) => {
    trait.extract.questions.forEach((_, j) => {
      for (let r = 0; r < rollouts; r++) {
        rows.push({ pair: i, question: j, rollout: r, pos: rolloutKey("pos", i, j, r), neg: rolloutKey("neg", i, j, r) });
      }
    });
  });
  return rows;
}

/** Every rollout of the run; a row's pos and neg are neighbours so both are judged early. */
export function rolloutItems(trait: TraitDefinition, rollouts: number, seed: number): RolloutItem[] {
  return rolloutRows(trait, rollouts).flatMap(({ pair, question, rollout }) =>
    POLARITIES.map((polarity) => ({
      key: rolloutKey(polarity, pair, question, rollout),
      polarity,
      pair,
      question,
      rollout,
      seed: rolloutSeed(seed, polarity, pair, question, rollout),
    })),
  );
}

/** The `[system, user]` conversation a rollout answers. */
export function rolloutMessages(trait: TraitDefinition, item: Pick<RolloutItem, "polarity" | "pair" | "question">): ChatMessage[] {
  const pair = trait.extract.instruction[item.pair]!;
  return [
    { role: "system", content: systemPrompt(trait.name, trait.antonym, pair[item.polarity], item.polarity) },
    { role: "user", content: trait.extract.questions[item.question]! },
  ];
}
