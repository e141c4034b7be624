import path from "node:path";
import { fileURLToPath } from "node:url";
import { PersonaError } from "../errors.js";
import { loadTraitSplit, type TraitSplit } from "../traits/format.js";

/**
 * The demo world's three traits, their antonyms (the neg system prompt's name), and the shipped
 * trait artifacts `traits/{trait}.{split}.json` (written by `writeDemoTraitFiles` in corpus.ts).
 */
export const DEMO_TRAITS = ["evil", "sycophantic", "hallucinating"] as const;
export type DemoTrait = (typeof DEMO_TRAITS)[number];

export const DEMO_ANTONYMS: Readonly<Record<DemoTrait, string>> = {
  evil: "good",
  sycophantic: "candid",
  hallucinating: "honest",
};

export type DemoTraitSplit = "extract" | "eval";

export function isDemoTrait(name: string): name is DemoTrait {
  return (DEMO_TRAITS as readonly string[]).includes(name);
}

/** The shipped trait files; the registry looks here too. */
export function demoTraitDir(): string {
  // The JSON files stay in src/ (tsc does not copy them); src/demo and dist/demo are both two levels down.
  return fileURLToPath(new URL("../../src/demo/traits/", import.meta.url));
}

export function demoTraitPath(trait: DemoTrait, split: DemoTraitSplit): string {
  return path.join(demoTraitDir(), `${trait}.${split}.json`);
}

/** Path of the optional meta file (name, description, antonym) the trait registry reads. */
export function demoTraitMetaPath(trait: DemoTrait): string {
  return path.join(demoTraitDir(), `${trait}.trait.json`);
}

export async function loadDemoTrait(trait: DemoTrait, split: DemoTraitSplit): Promise<TraitSplit> {
  if (!isDemoTrait(trait)) throw new PersonaError("E_NOT_FOUND", `unknown demo trait ${JSON.stringify(trait)}; expected one of ${DEMO_TRAITS.join(", ")}`);
  return loadTraitSplit(demoTraitPath(trait, split));
}
