/** Opening the engine and a model for one command, with the global flags, and closing both. */
import { Command, Option } from "commander";
import { Engine } from "../engine/Engine.js";
import type { Model } from "../engine/Model.js";
import type { GpuChoice } from "../engine/ffi/discover.js";
import { MODEL_REF_HELP, resolveModelRef } from "../hub/resolve.js";
import type { LoraAdapter } from "../engine/lora.js";
import { collectLora } from "./args/lora.js";
import { intArg } from "./args/numbers.js";
import { note } from "./output.js";
import { openJudge } from "./judge.js";
import type { Judge } from "../judge/types.js";
import { downloadProgress } from "./progress.js";

export interface EngineFlags {
  verbose?: boolean;
  threads?: number;
  gpu?: GpuChoice;
}

/** Adds the engine flags every model-using command accepts. */
export function withEngineFlags(cmd: Command, defaults: { model?: string; modelOptional?: boolean } = {}): Command {
  // A command that can work without a model (chat --server) checks for one itself.
  return withRuntimeFlags(
    (defaults.modelOptional ? cmd.option("-m, --model <ref>", MODEL_REF_HELP) : cmd.requiredOption("-m, --model <ref>", MODEL_REF_HELP, defaults.model)).option(
      "--lora <file[:scale]>",
      "apply a GGUF LoRA adapter (repeatable; make one with persona convert lora)",
      collectLora,
    ),
  );
}

/** Where models come from and what runs them, for commands that take their models otherwise (persona worker's repeatable --model). */
export function withRuntimeFlags(cmd: Command): Command {
  return cmd
    .option("--offline", "use only the local hub cache for hf: models (also HF_HUB_OFFLINE=1)")
    .option("--threads <n>", "CPU threads, at most the core count (default: PERSONA_THREADS, or the cores not busy with other work)", intArg(1))
    .addOption(new Option("--gpu <kind>", "llama.cpp build to use (GPU builds are opt-in installs)").choices(["auto", "cpu", "cuda", "vulkan", "metal"]));
}

/** `--model` to a GGUF path: a file, `demo`, or an hf: reference (downloaded with a progress bar). */
export function resolveModelPath(spec: string, opts: { offline?: boolean } = {}): Promise<string> {
  return resolveModelRef(spec, { ...(opts.offline ? { offline: true } : {}), onProgress: downloadProgress() });
}

/** The judge a command opens beside its model (see cli/judge.ts); a `local:` judge loads into the command's engine. */
export interface JudgeRef {
  spec: string;
  /** Caches judgements in this run directory. */
  runDir?: string;
}

type ModelOpts = { model: string; threads?: number; gpu?: GpuChoice; offline?: boolean; lora?: LoraAdapter[] };
type LoadOpts = { vocabOnly?: boolean; noMmap?: boolean };

/**
 * Runs `fn` with a loaded model (and the judge of `judgeRef`); the engine is disposed whatever
 * happens. A local judge shares the engine: one worker and one set of threads, not two competing.
 */
export async function withModel<T>(
  cmd: Command,
  opts: ModelOpts & { judgeRef: JudgeRef },
  fn: (model: Model, engine: Engine, judge: Judge) => Promise<T>,
  load?: LoadOpts,
): Promise<T>;
export async function withModel<T>(cmd: Command, opts: ModelOpts, fn: (model: Model, engine: Engine) => Promise<T>, load?: LoadOpts): Promise<T>;
export async function withModel<T>(
  cmd: Command,
  opts: ModelOpts & { judgeRef?: JudgeRef },
  fn: (model: Model, engine: Engine, judge: Judge) => Promise<T>,
  load: LoadOpts = {},
): Promise<T> {
  const globals = cmd.optsWithGlobals() as EngineFlags;
  const engine = await Engine.create({ verbose: globals.verbose ?? false, threads: opts.threads, gpu: opts.gpu, onWarning: (m) => note(`persona: ${m}`) });
  try {
    const model = await engine.loadModel(await resolveModelPath(opts.model, opts), { ...load, ...(opts.lora?.length ? { loras: opts.lora } : {}) });
    // Without a judge ref the caller's `fn` takes two arguments (the second overload).
    if (!opts.judgeRef) return await (fn as (model: Model, engine: Engine) => Promise<T>)(model, engine);
    const { judge, close } = await openJudge(opts.judgeRef.spec, opts.judgeRef.runDir, engine);
    try {
      return await fn(model, engine, judge);
    } finally {
      await close();
    }
  } finally {
    await engine.dispose();
  }
}
