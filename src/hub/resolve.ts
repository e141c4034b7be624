/**
 * What `--model` accepts everywhere: a GGUF path, `demo` (the built-in demo model) or
 * `hf:OWNER/NAME[:QUANT|/FILE]` (downloaded into the hub cache on first use). When nothing
 * matches, the error lists what was tried.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { DEMO_MODEL_PATH } from "../demo/model.js";
import { PersonaError } from "../errors.js";
import { hubEnv } from "./cache.js";
import { type PullOptions, parseHubRef, pullModel } from "./pull.js";

export const MODEL_REF_HELP = "GGUF file, hf:OWNER/NAME[:QUANT] (Hugging Face hub, cached), or demo";

export async function resolveModelRef(spec: string, opts: PullOptions = {}): Promise<string> {
  if (spec === "demo") {
    if (!existsSync(DEMO_MODEL_PATH)) throw new PersonaError("E_NOT_FOUND", `the demo model is missing at ${DEMO_MODEL_PATH}; rebuild it with npm run demo:train`);
    return DEMO_MODEL_PATH;
  }
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
  throw new PersonaError(
    "E_NOT_FOUND",
    `model "${spec}" not found: tried a file at ${path.resolve(spec)} (none), the built-in "demo" (not that name), a hub reference (needs the hf: prefix; hub cache ${hubEnv().cacheDir}).${hint} --model takes a ${MODEL_REF_HELP}`,
  );
}
