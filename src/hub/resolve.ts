/**
 * What `--model` accepts everywhere: a GGUF path, a registered name (`demo`, once the demo world
 * has registered itself: demo/register.ts) or `hf:OWNER/NAME[:QUANT|/FILE]` (downloaded into the
 * hub cache on first use). When nothing matches, the error lists what was tried.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { PersonaError } from "../errors.js";
import { hubEnv } from "./cache.js";
import { type PullOptions, parseHubRef, pullModel } from "./pull.js";

export const MODEL_REF_HELP = "GGUF file, hf:OWNER/NAME[:QUANT] (Hugging Face hub, cached), or demo";

/** Model names and what each resolves to (a GGUF path); plug-ins such as the demo world add theirs. */
const namedModels = new Map<string, () => string>();

/** Makes `--model NAME` resolve through `resolve`, which throws a PersonaError when the model is missing. */
export function registerModelName(name: string, resolve: () => string): void {
  namedModels.set(name, resolve);
}

export async function resolveModelRef(spec: string, opts: PullOptions = {}): Promise<string> {
  const named = namedModels.get(spec);
  if (named) return named();
  if (spec.startsWith("hf:")) return (await pullModel(parseHubRef(spec), opts)).modelPath;
  if (existsSync(spec)) {
    if (!statSync(spec).isDirectory()) return spec;
    const ggufs = readdirSync(spec).filter((f) => /\.gguf$/i.test(f));
    if (existsSync(path.join(spec, "config.json"))) {
      throw new PersonaError("E_BAD_INPUT", `${spec} is a Hugging Face checkpoint, not a GGUF; convert it first: persona convert hf ${spec} --out model.gguf`);
    }
    throw new PersonaError("E_BAD_INPUT", `${spec} is a directory; name a GGUF file in it${ggufs.length ? ` (${ggufs.join(", ")})` : ""}`);
  }
  const looksLikeRepo = /^[A-Za-z0-9][\w.-]*\/[\w.-]+(:[\w.-]+)?$/.test(spec);
  const hint = looksLikeRepo ? ` Did you mean hf:${spec}?` : "";
  const names = [...namedModels.keys()].map((n) => JSON.stringify(n));
  const builtins = names.length ? ` the built-in ${names.join(", ")} (not ${names.length === 1 ? "that name" : "those names"}),` : "";
  throw new PersonaError(
    "E_NOT_FOUND",
    `model "${spec}" not found: tried a file at ${path.resolve(spec)} (none),${builtins} a hub reference (needs the hf: prefix; hub cache ${hubEnv().cacheDir}).${hint} --model takes a ${MODEL_REF_HELP}`,
  );
}
