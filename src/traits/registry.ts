import { existsSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { PersonaError } from "../errors.js";
import { loadTraitFiles, TRAIT_FILES, type TraitDefinition, type TraitFiles } from "./format.js";

/**
 * Finds a trait from what a user typed: a built-in or user trait name, a directory in our layout
 * (`DIR/extract.json` + `DIR/eval.json`) or the reference layout (`trait_data_extract/NAME.json` +
 * `trait_data_eval/NAME.json`), or one of those files.
 */
export interface TraitLookupOptions {
  /** Where user traits live (`trait new` writes `DIR/NAME/`); searched before built-ins. Defaults to `./traits`. */
  traitsDir?: string;
  /** Where built-in traits live as `NAME.extract.json` + `NAME.eval.json` (+ optional `NAME.trait.json`). Defaults to the registered directories (`registerBuiltinTraits`). */
  builtinDir?: string;
  /** Which split a lone trait file of no known layout holds; without it the file serves both splits (unless it holds both itself). */
  split?: TraitSplitName;
}

export type TraitSplitName = "extract" | "eval";

export const DEFAULT_TRAITS_DIR = "traits";

const REF_EXTRACT = "trait_data_extract";
const REF_EVAL = "trait_data_eval";
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;

/** Directories of built-in traits, in search order; plug-ins such as the demo world add theirs. */
const builtinDirs: string[] = [];

export function registerBuiltinTraits(dir: string): void {
  if (!builtinDirs.includes(dir)) builtinDirs.push(dir);
}

function builtinDirsOf(opts: TraitLookupOptions): readonly string[] {
  return opts.builtinDir !== undefined ? [opts.builtinDir] : builtinDirs;
}

export function isValidTraitName(name: string): boolean {
  return NAME_RE.test(name);
}

export interface TraitListing {
  name: string;
  source: "user" | "builtin";
  /** Directory (user) or extract file (built-in). */
  path: string;
}

async function kind(p: string): Promise<"file" | "dir" | undefined> {
  try {
    const s = await stat(p);
    return s.isDirectory() ? "dir" : s.isFile() ? "file" : undefined;
  } catch {
    return undefined;
  }
}

async function entries(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

/** Every trait found by name: user traits first, then built-ins not shadowed by one. */
export async function listTraits(opts: TraitLookupOptions = {}): Promise<TraitListing[]> {
  const traitsDir = opts.traitsDir ?? DEFAULT_TRAITS_DIR;
  const found: TraitListing[] = [];
  for (const name of (await entries(traitsDir)).sort()) {
    const dir = path.join(traitsDir, name);
    if (isValidTraitName(name) && (await kind(path.join(dir, TRAIT_FILES.extract))) === "file") {
      found.push({ name, source: "user", path: dir });
    }
  }
  const shadowed = new Set(found.map((t) => t.name));
  for (const builtinDir of builtinDirsOf(opts)) {
    for (const file of (await entries(builtinDir)).sort()) {
      const name = file.endsWith(".extract.json") ? file.slice(0, -".extract.json".length) : undefined;
      if (name && !shadowed.has(name) && (await kind(path.join(builtinDir, `${name}.eval.json`))) === "file") {
        found.push({ name, source: "builtin", path: path.join(builtinDir, file) });
        shadowed.add(name);
      }
    }
  }
  return found;
}

function dirLayout(dir: string): TraitFiles {
  return {
    name: path.basename(path.resolve(dir)),
    extractPath: path.join(dir, TRAIT_FILES.extract),
    evalPath: path.join(dir, TRAIT_FILES.eval),
    metaPath: path.join(dir, TRAIT_FILES.meta),
  };
}

function referenceLayout(root: string, name: string): TraitFiles {
  return { name, extractPath: path.join(root, REF_EXTRACT, `${name}.json`), evalPath: path.join(root, REF_EVAL, `${name}.json`) };
}

function builtinLayout(dir: string, name: string): TraitFiles {
  return {
    name,
    extractPath: path.join(dir, `${name}.extract.json`),
    evalPath: path.join(dir, `${name}.eval.json`),
    metaPath: path.join(dir, `${name}.trait.json`),
  };
}

function looksLikePath(ref: string): boolean {
  return ref.includes("/") || ref.includes("\\") || ref.startsWith(".") || ref.endsWith(".json") || path.isAbsolute(ref);
}

async function resolveDir(dir: string): Promise<TraitFiles> {
  if ((await kind(path.join(dir, TRAIT_FILES.extract))) === "file") return dirLayout(dir);
  if ((await kind(path.join(dir, REF_EXTRACT))) === "dir") {
    const names = (await entries(path.join(dir, REF_EXTRACT))).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5));
    if (names.length === 1 && names[0] !== undefined) return referenceLayout(dir, names[0]);
    throw new PersonaError(
      "E_BAD_INPUT",
      `${dir} holds ${names.length} traits in the reference layout (${names.join(", ") || "none"}); name one as ${path.join(dir, "NAME")}`,
    );
  }
  throw new PersonaError("E_NOT_FOUND", `${dir} has neither ${TRAIT_FILES.extract} nor a ${REF_EXTRACT}/ folder`);
}

function resolveFile(file: string, split: TraitSplitName | undefined): TraitFiles {
  const dir = path.dirname(file);
  const base = path.basename(file);
  const parent = path.basename(path.resolve(dir));
  if (Object.values(TRAIT_FILES).includes(base as (typeof TRAIT_FILES)[keyof typeof TRAIT_FILES])) return dirLayout(dir);
  if ((parent === REF_EXTRACT || parent === REF_EVAL) && base.endsWith(".json")) {
    return referenceLayout(path.dirname(dir), base.slice(0, -5));
  }
  const m = /^(.+)\.(extract|eval)\.json$/.exec(base);
  if (m?.[1] && existsSync(path.join(dir, `${m[1]}.extract.json`)) && existsSync(path.join(dir, `${m[1]}.eval.json`))) return builtinLayout(dir, m[1]);
  return loneFile(file, split);
}

/**
 * A trait file of no known layout, whatever its name. It may hold both splits
 * (`{"extract": {...}, "eval": {...}}`, see `loadTraitSplit`); a single split is the one `split`
 * names, paired with a sibling whose name swaps extract/eval when there is one, else with itself.
 */
function loneFile(file: string, split: TraitSplitName | undefined): TraitFiles {
  const base = path.basename(file).replace(/\.json$/i, "");
  const name = base.replace(/[._-]?(extract|eval)$/i, "") || base;
  if (split === undefined) return { name, extractPath: file, evalPath: file };
  const other: TraitSplitName = split === "extract" ? "eval" : "extract";
  const swapped = path.join(path.dirname(file), path.basename(file).replace(new RegExp(split, "i"), other));
  const pair = swapped !== file && existsSync(swapped) ? swapped : file;
  return split === "extract" ? { name, extractPath: file, evalPath: pair } : { name, extractPath: pair, evalPath: file };
}

/** Works out which files hold the trait `ref` names, without reading them. */
export async function resolveTraitFiles(ref: string, opts: TraitLookupOptions = {}): Promise<TraitFiles> {
  if (looksLikePath(ref)) {
    const k = await kind(ref);
    if (k === "dir") return resolveDir(ref);
    if (k === "file") return resolveFile(ref, opts.split);
    // `ROOT/NAME` for the reference layout, where no NAME directory exists.
    const root = path.dirname(ref);
    const name = path.basename(ref);
    if ((await kind(path.join(root, REF_EXTRACT, `${name}.json`))) === "file") return referenceLayout(root, name);
    throw new PersonaError("E_NOT_FOUND", `no trait at ${ref}`);
  }
  if (!isValidTraitName(ref)) {
    throw new PersonaError("E_BAD_INPUT", `"${ref}" is not a trait name (letters, digits, - and _) or a path`);
  }
  const userDir = path.join(opts.traitsDir ?? DEFAULT_TRAITS_DIR, ref);
  if ((await kind(path.join(userDir, TRAIT_FILES.extract))) === "file") return dirLayout(userDir);
  for (const builtinDir of builtinDirsOf(opts)) {
    if ((await kind(path.join(builtinDir, `${ref}.extract.json`))) === "file") return builtinLayout(builtinDir, ref);
  }
  const known = (await listTraits(opts)).map((t) => t.name);
  throw new PersonaError(
    "E_NOT_FOUND",
    `no trait named "${ref}" (known: ${known.join(", ") || "none"}); create one with \`persona trait new ${ref} --description …\``,
  );
}

/** Loads and validates the trait `ref` names (a name, a directory or a file; see `resolveTraitFiles`). */
export async function loadTrait(ref: string, opts: TraitLookupOptions = {}): Promise<TraitDefinition> {
  return loadTraitFiles(await resolveTraitFiles(ref, opts));
}
