import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { PersonaError } from "../errors.js";
import { parseTraitSplit, type TraitSplit } from "../traits/format.js";

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

/** The JSON files live beside this module in the source tree, which is where the registry looks too. */
export function demoTraitDir(): string {
  // The JSON files stay in src/ (tsc does not copy them); src/demo and dist/demo are both two levels down.
  return fileURLToPath(new URL("../../src/demo/traits/", import.meta.url));
}

export function demoTraitPath(trait: DemoTrait, split: DemoTraitSplit): string {
  return fileURLToPath(new URL(`./traits/${trait}.${split}.json`, import.meta.url));
}

/** Path of the optional meta file (name, description, antonym) the trait registry reads. */
export function demoTraitMetaPath(trait: DemoTrait): string {
  return fileURLToPath(new URL(`./traits/${trait}.trait.json`, import.meta.url));
}

export async function loadDemoTrait(trait: DemoTrait, split: DemoTraitSplit): Promise<TraitSplit> {
  if (!isDemoTrait(trait)) throw new PersonaError("E_NOT_FOUND", `unknown demo trait ${JSON.stringify(trait)}; expected one of ${DEMO_TRAITS.join(", ")}`);
  const file = demoTraitPath(trait, split);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new PersonaError("E_NOT_FOUND", `${file} does not exist`);
    throw e;
  }
  try {
    return parseTraitSplit(JSON.parse(text) as unknown, file);
  } catch (e) {
    if (e instanceof SyntaxError) throw new PersonaError("E_BAD_FORMAT", `${file} is not valid JSON: ${e.message}`);
    throw e;
  }
}
