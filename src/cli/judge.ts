/**
 * Which judge a command uses: `--judge` when given, else the demo rubric judge for the built-in
 * demo traits (the only ones it can score; a user trait that merely shares a name is not one),
 * else an error asking for a judge before any work starts. With a run directory, judgements are
 * cached there so a re-run never pays for a call twice.
 */
import path from "node:path";
import { demoTraitDir, isDemoTrait } from "../demo/traits.js";
import type { Engine } from "../engine/Engine.js";
import { PersonaError } from "../errors.js";
import { CachedJudge } from "../judge/cache.js";
import { JUDGE_SPEC_HELP, resolveJudge } from "../judge/resolve.js";
import type { Judge } from "../judge/types.js";
import { loadTraitFiles, type TraitDefinition } from "../traits/format.js";
import { resolveTraitFiles, type TraitSplitName } from "../traits/registry.js";

export interface LoadedTrait {
  trait: TraitDefinition;
  /** True for the demo traits shipped with the package. */
  builtinDemo: boolean;
}

export async function loadTraitRef(ref: string, split?: TraitSplitName): Promise<LoadedTrait> {
  const files = await resolveTraitFiles(ref, split !== undefined ? { split } : {});
  const trait = await loadTraitFiles(files);
  const builtinDemo = isDemoTrait(trait.name) && path.resolve(path.dirname(files.extractPath)) === path.resolve(demoTraitDir());
  return { trait, builtinDemo };
}

export function judgeSpecFor(t: LoadedTrait, spec: string | undefined): string {
  if (spec !== undefined) return spec;
  if (t.builtinDemo) return "demo";
  throw new PersonaError(
    "E_BAD_INPUT",
    `--judge is required for trait "${t.trait.name}" (only the built-in demo traits default to the demo judge); use ${JUDGE_SPEC_HELP}`,
  );
}

export interface OpenedJudge {
  judge: Judge;
  /** Flushes the cache (if any) and frees the judge. */
  close(): Promise<void>;
}

/** `engine`: where a `local:` judge loads its model (else it starts an engine of its own). */
export async function openJudge(spec: string, runDir?: string, engine?: Engine): Promise<OpenedJudge> {
  const inner = await resolveJudge(spec, engine ? { engine } : {});
  const judge = runDir ? await CachedJudge.open(inner, path.join(runDir, "judge-cache.jsonl")) : inner;
  return {
    judge,
    async close() {
      if (judge !== inner) await judge.dispose?.();
      await inner.dispose?.();
    },
  };
}
