import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { PersonaError } from "../errors.js";
import { writeFileAtomic } from "../store/atomic.js";

/**
 * Trait artifacts in the reference implementation's interchange format: one JSON file per split,
 * `{"instruction":[{"pos","neg"}…], "questions":[…], "eval_prompt":"…{question}…{answer}…"}`.
 * Name, description and antonym are not part of that format; `writeTrait` keeps them in
 * `trait.json` beside the two split files.
 */
// Refine rather than .trim(): loading must not alter the text the reference used verbatim.
const nonBlank = () => z.string().refine((s) => s.trim().length > 0, "must be a non-empty string");

export const InstructionPairSchema = z.object({ pos: nonBlank(), neg: nonBlank() });

export const TraitSplitSchema = z.object({
  instruction: z.array(InstructionPairSchema).min(1, "needs at least one {pos, neg} pair"),
  questions: z.array(nonBlank()).min(1, "needs at least one question"),
  eval_prompt: z
    .string()
    .refine((s) => s.includes("{question}"), "must contain the placeholder {question}")
    .refine((s) => s.includes("{answer}"), "must contain the placeholder {answer}"),
});

/** A system prompt asking for the trait to a degree, 0 (its opposite) to 1 (the trait), for monitoring. */
export const GradedPromptSchema = z.object({ level: z.number().min(0).max(1), system: nonBlank() });

export const TraitMetaSchema = z.object({
  name: nonBlank().optional(),
  description: z.string().optional(),
  antonym: nonBlank().optional(),
  /** Optional: graded system prompts for monitoring experiments (`persona monitor --graded`). */
  graded: z.array(GradedPromptSchema).min(1).optional(),
});

export type InstructionPair = z.infer<typeof InstructionPairSchema>;
export type TraitSplit = z.infer<typeof TraitSplitSchema>;
export type TraitMeta = z.infer<typeof TraitMetaSchema>;
export type GradedPrompt = z.infer<typeof GradedPromptSchema>;

export interface TraitDefinition {
  /** Trait adjective, e.g. `evil`; used in the pos system prompt. */
  name: string;
  description?: string;
  /** Adjective for the neg system prompt; "helpful" when absent, as in the reference. */
  antonym?: string;
  /** Questions and pairs for extraction. */
  extract: TraitSplit;
  /** Held-out questions for evaluation; same rubric and usually the same pairs. */
  eval: TraitSplit;
  /** System prompts graded from the opposite (0) to the trait (1); optional. */
  graded?: GradedPrompt[];
}

/** File names inside a trait directory written by `writeTrait`. */
export const TRAIT_FILES = { extract: "extract.json", eval: "eval.json", meta: "trait.json" } as const;

/** Turns a zod error into "field: problem" lines that name the file. */
function formatIssues(file: string, error: z.ZodError): string {
  const lines = error.issues.map((i) => `  ${i.path.length ? i.path.join(".") : "(root)"}: ${i.message}`);
  return `${file} is not a valid trait file:\n${lines.join("\n")}`;
}

async function readJson(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new PersonaError("E_NOT_FOUND", `${file} does not exist`);
    throw e;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new PersonaError("E_BAD_FORMAT", `${file} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Validates a parsed split; `source` names it in error messages. */
export function parseTraitSplit(data: unknown, source: string): TraitSplit {
  const parsed = TraitSplitSchema.safeParse(data);
  if (!parsed.success) throw new PersonaError("E_BAD_FORMAT", formatIssues(source, parsed.error));
  return parsed.data;
}

/** Reads one split; a file holding both (`{"extract": {...}, "eval": {...}}`) gives the one `split` names. */
export async function loadTraitSplit(file: string, split?: "extract" | "eval"): Promise<TraitSplit> {
  const data = await readJson(file);
  if (split !== undefined && typeof data === "object" && data !== null && "extract" in data && "eval" in data && !("instruction" in data)) {
    return parseTraitSplit((data as Record<string, unknown>)[split], `${file} (${split})`);
  }
  return parseTraitSplit(data, file);
}

/** Reads an optional `trait.json`; a missing file gives `{}`. */
export async function loadTraitMeta(file: string): Promise<TraitMeta> {
  let data: unknown;
  try {
    data = await readJson(file);
  } catch (e) {
    if (e instanceof PersonaError && e.code === "E_NOT_FOUND") return {};
    throw e;
  }
  const parsed = TraitMetaSchema.safeParse(data);
  if (!parsed.success) throw new PersonaError("E_BAD_FORMAT", formatIssues(file, parsed.error));
  return parsed.data;
}

export interface TraitFiles {
  /** Name used when the meta file gives none. */
  name: string;
  extractPath: string;
  evalPath: string;
  /** Optional `trait.json`-style file with name, description, antonym. */
  metaPath?: string;
}

/** Loads a trait from its two split files (and optional meta file). */
export async function loadTraitFiles(files: TraitFiles): Promise<TraitDefinition> {
  const [extract, evalSplit, meta] = await Promise.all([
    loadTraitSplit(files.extractPath, "extract"),
    loadTraitSplit(files.evalPath, "eval"),
    files.metaPath ? loadTraitMeta(files.metaPath) : Promise.resolve<TraitMeta>({}),
  ]);
  return {
    name: meta.name ?? files.name,
    ...(meta.description !== undefined && { description: meta.description }),
    ...(meta.antonym !== undefined && { antonym: meta.antonym }),
    ...(meta.graded !== undefined && { graded: meta.graded }),
    extract,
    eval: evalSplit,
  };
}

/** Writes `extract.json`, `eval.json` (interchange format) and `trait.json` (name, description, antonym, graded prompts) into `dir`. */
export async function writeTrait(dir: string, def: TraitDefinition): Promise<void> {
  // Validate before touching the disk, so a bad definition never replaces a good one.
  const extract = parseTraitSplit(def.extract, `${def.name} (extract split)`);
  const evalSplit = parseTraitSplit(def.eval, `${def.name} (eval split)`);
  await mkdir(dir, { recursive: true });
  const meta: TraitMeta = { name: def.name, description: def.description, antonym: def.antonym, graded: def.graded };
  if (def.graded !== undefined) {
    const parsed = TraitMetaSchema.safeParse(meta);
    if (!parsed.success) throw new PersonaError("E_BAD_FORMAT", formatIssues(`${def.name} (graded prompts)`, parsed.error));
  }
  await writeFileAtomic(path.join(dir, TRAIT_FILES.extract), `${JSON.stringify(extract, null, 2)}\n`);
  await writeFileAtomic(path.join(dir, TRAIT_FILES.eval), `${JSON.stringify(evalSplit, null, 2)}\n`);
  await writeFileAtomic(path.join(dir, TRAIT_FILES.meta), `${JSON.stringify(meta, null, 2)}\n`);
}

export type Polarity = "pos" | "neg";

/**
 * "a" or "an" by the first letter's vowel, with the common exceptions in trait adjectives: a silent
 * h ("an honest", the demo's antonym for hallucinating) and a "you"-sounding u ("a unique").
 */
export function indefiniteArticle(word: string): "a" | "an" {
  const w = word.trim().toLowerCase();
  if (/^(hon|hour|heir)/.test(w)) return "an";
  if (/^(uni|use|usu|eu|one)/.test(w)) return "a";
  return /^[aeiou]/.test(w) ? "an" : "a";
}

/**
 * `You are a/an {name} assistant. {instruction}`: name is the trait for pos and the antonym (or
 * "helpful") for neg, as in the reference rollouts.
 */
export function systemPrompt(traitName: string, antonym: string | undefined, instruction: string, polarity: Polarity): string {
  const name = polarity === "pos" ? traitName : antonym || "helpful";
  return `You are ${indefiniteArticle(name)} ${name} assistant. ${instruction}`;
}
