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
import { downloadProgress } from "./progress.js";

export interface EngineFlags {
  verbose?: boolean;
  threads?: number;
  gpu?: GpuChoice;
}

/** Adds the engine flags every model-using command accepts. */
export function withEngineFlags(cmd: Command, defaults: { model?: string; modelOptional?: boolean } = {}): Command {
  // A command that can work without a model (chat --server) checks for one itself.
  return (defaults.modelOptional ? cmd.option("-m, --model <ref>", MODEL_REF_HELP) : cmd.requiredOption("-m, --model <ref>", MODEL_REF_HELP, defaults.model))
    .option("--offline", "use only the local hub cache for hf: models (also HF_HUB_OFFLINE=1)")
    .option("--lora <file[:scale]>", "apply a GGUF LoRA adapter (repeatable; make one with persona convert lora)", collectLora)
    .option("--threads <n>", "CPU threads, at most the core count (default: PERSONA_THREADS, or the cores not busy with other work)", intArg(1))
    .addOption(new Option("--gpu <kind>", "llama.cpp build to use (GPU builds are opt-in installs)").choices(["auto", "cpu", "cuda", "vulkan", "metal"]));
}

/** `--model` to a GGUF path: a file, `demo`, or an hf: reference (downloaded with a progress bar). */
export function resolveModelPath(spec: string, opts: { offline?: boolean } = {}): Promise<string> {
  return resolveModelRef(spec, { ...(opts.offline ? { offline: true } : {}), onProgress: downloadProgress() });
}

/** Runs `fn` with a loaded model; the engine is disposed whatever happens. */
export async function withModel<T>(
  cmd: Command,
  opts: { model: string; threads?: number; gpu?: GpuChoice; offline?: boolean; lora?: LoraAdapter[] },
  fn: (model: Model, engine: Engine) => Promise<T>,
  load: { vocabOnly?: boolean; noMmap?: boolean } = {},
): Promise<T> {
  const globals = cmd.optsWithGlobals() as EngineFlags;
  const engine = await Engine.create({ verbose: globals.verbose ?? false, threads: opts.threads, gpu: opts.gpu, onWarning: (m) => note(`persona: ${m}`) });
  try {
    const model = await engine.loadModel(await resolveModelPath(opts.model, opts), { ...load, ...(opts.lora?.length ? { loras: opts.lora } : {}) });
    return await fn(model, engine);
  } finally {
    await engine.dispose();
  }
}
