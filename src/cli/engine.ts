/** Opening the engine and a model for one command, with the global flags, and closing both. */
import { Command, Option } from "commander";
import { existsSync } from "node:fs";
import { DEMO_MODEL_PATH } from "../demo/model.js";
import { Engine } from "../engine/Engine.js";
import type { Model } from "../engine/Model.js";
import type { GpuChoice } from "../engine/ffi/discover.js";
import { PersonaError } from "../errors.js";
import { intArg } from "./args/numbers.js";

export interface EngineFlags {
  verbose?: boolean;
  threads?: number;
  gpu?: GpuChoice;
}

/** Adds the engine flags every model-using command accepts. */
export function withEngineFlags(cmd: Command, defaults: { model?: string } = {}): Command {
  return cmd
    .requiredOption("-m, --model <path>", "GGUF model file, or `demo` for the built-in demo model", defaults.model)
    .option("--threads <n>", "CPU threads (default: all cores, or PERSONA_THREADS)", intArg(1))
    .addOption(new Option("--gpu <kind>", "llama.cpp build to use (GPU builds are opt-in installs)").choices(["auto", "cpu", "cuda", "vulkan", "metal"]));
}

export function resolveModelPath(spec: string): string {
  if (spec === "demo") {
    if (!existsSync(DEMO_MODEL_PATH)) {
      throw new PersonaError("E_NOT_FOUND", `the demo model is missing at ${DEMO_MODEL_PATH}; rebuild it with npm run demo:train`);
    }
    return DEMO_MODEL_PATH;
  }
  return spec;
}

/** Runs `fn` with a loaded model; the engine is disposed whatever happens. */
export async function withModel<T>(
  cmd: Command,
  opts: { model: string; threads?: number; gpu?: GpuChoice },
  fn: (model: Model, engine: Engine) => Promise<T>,
  load: { vocabOnly?: boolean } = {},
): Promise<T> {
  const globals = cmd.optsWithGlobals() as EngineFlags;
  const engine = await Engine.create({ verbose: globals.verbose ?? false, threads: opts.threads, gpu: opts.gpu });
  try {
    const model = await engine.loadModel(resolveModelPath(opts.model), load);
    return await fn(model, engine);
  } finally {
    await engine.dispose();
  }
}
