/**
 * Extraction rollouts (spec §2): for every instruction pair i × extraction question j × rollout r,
 * one reply under the pos system prompt and one under the neg. Each rollout has a key
 * `pos/i/j/r` and a seed derived from (seed, polarity, i, j, r) alone, so with exact numerics a
 * re-run reproduces it whatever the batch it lands in or how many rollouts came before it.
 */
import { createHash } from "node:crypto";
import type { Model } from "../../engine/Model.js";
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

export interface GenerateRolloutsOptions {
  /** Defaults to 1. */
  temperature?: number;
  /** Defaults to 1. */
  topP?: number;
  /** Defaults to 1000. */
  maxTokens?: number;
  /** Sequences decoded together. Defaults to the engine's default (up to 16). */
  parallel?: number;
  /** Items per `model.generate` call. Defaults to 256. */
  batchSize?: number;
  /** F32 KV cache so a rollout does not depend on its batch. Defaults to true. */
  exact?: boolean;
  /** Called as each rollout finishes, in completion order. */
  onRollout?(item: RolloutItem, record: RolloutRecord): void;
  signal?: AbortSignal;
}

/**
 * Generates `items` in batches, one batched `generate` call per batch. Prompts are shared by the
 * rollouts of a (polarity, pair, question), so each is templated once.
 */
export async function generateRollouts(
  model: Model,
  trait: TraitDefinition,
  items: readonly RolloutItem[],
  opts: GenerateRolloutsOptions = {},
): Promise<void> {
  const prompts = new Map<string, Int32Array>();
  const promptOf = async (item: RolloutItem): Promise<Int32Array> => {
    const id = `${item.polarity}/${item.pair}/${item.question}`;
    let p = prompts.get(id);
    if (!p) {
      p = await model.encodeChat(rolloutMessages(trait, item));
      prompts.set(id, p);
    }
    return p;
  };
  const batchSize = opts.batchSize ?? 256;
  for (let start = 0; start < items.length; start += batchSize) {
    const batch = items.slice(start, start + batchSize);
    const requests = [];
    for (const item of batch) requests.push({ prompt: await promptOf(item), seed: item.seed });
    await model.generate(requests, {
      temperature: opts.temperature ?? 1,
      topP: opts.topP ?? 1,
      maxTokens: opts.maxTokens ?? 1000,
      parallel: opts.parallel,
      exact: opts.exact ?? true,
      signal: opts.signal,
      onResult: (r) => opts.onRollout?.(batch[r.index]!, { text: r.text, tokens: r.tokens.length, finish: r.finishReason }),
    });
  }
}
