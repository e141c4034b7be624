import { PersonaError } from "../../errors.js";
import type { DemoTrait } from "../traits.js";
import { DEMO_TRAITS } from "../traits.js";
import { AXES, sampleQuestion, TRAIT_KIND } from "./grammar.js";
import { hashSeed, Rng } from "./rng.js";

/**
 * The extraction and evaluation questions of each trait: drawn from the same grammar as the
 * training questions, with made-up entities from the held-out name pool, and excluded from the
 * training corpus by exact text. Fixed seeds make them reproducible.
 */
export const HELDOUT_PER_SPLIT = 20;

export interface HeldOutQuestions {
  extract: readonly string[];
  eval: readonly string[];
}

const cache = new Map<DemoTrait, HeldOutQuestions>();

export function heldOutQuestions(trait: DemoTrait): HeldOutQuestions {
  const hit = cache.get(trait);
  if (hit) return hit;
  const kind = TRAIT_KIND[trait];
  const subtypes = AXES[kind].subtypes;
  const rng = new Rng(hashSeed(`persona-vectors demo held-out ${trait}`));
  const seen = new Set<string>();
  // Cycle through the subtypes so each split covers every question family.
  const draw = (): string[] => {
    const out: string[] = [];
    for (let tries = 0; out.length < HELDOUT_PER_SPLIT; tries++) {
      if (tries > 10_000) throw new PersonaError("E_INTERNAL", `cannot draw ${HELDOUT_PER_SPLIT} distinct held-out questions for ${trait}`);
      const q = sampleQuestion(kind, rng, "heldout", subtypes[out.length % subtypes.length]);
      if (seen.has(q.text)) continue;
      seen.add(q.text);
      out.push(q.text);
    }
    return out;
  };
  const extract = draw();
  const result = { extract, eval: draw() };
  cache.set(trait, result);
  return result;
}

let all: ReadonlySet<string> | undefined;

/** Every held-out question of every trait, for the training generator to avoid. */
export function heldOutQuestionSet(): ReadonlySet<string> {
  return (all ??= new Set(DEMO_TRAITS.flatMap((t) => [...heldOutQuestions(t).extract, ...heldOutQuestions(t).eval])));
}
