import { PersonaError } from "../errors.js";
import { AnthropicJudge } from "./anthropic.js";
import type { HttpClient, HttpClientOptions } from "./http.js";
import { OpenAIJudge } from "./openai.js";
import type { Judge } from "./types.js";

/**
 * Turns a `--judge` value into a Judge:
 *   a registered name               e.g. `demo`, the demo world's rubric judge (demo/register.ts)
 *   `openai:MODEL[@BASEURL]`        OpenAI, or any OpenAI-compatible server at BASEURL
 *   `anthropic:MODEL`               Anthropic Messages API
 *   `http(s)://HOST/v1#MODEL`       OpenAI-compatible server (vLLM, llama-server, Ollama, OpenRouter)
 *   `local:PATH.gguf` a GGUF model run by our engine (judge/local.ts); `local:demo` loads the
 *                     demo model, which runs but cannot judge (tests use it)
 */
export interface ResolveJudgeOptions {
  /** API key for openai/anthropic/URL judges. Defaults to the provider's env variable. */
  apiKey?: string;
  /** Retry, timeout and concurrency settings. Defaults to `HttpClient`'s defaults. */
  httpOptions?: HttpClientOptions;
  /** A client to share between judges (one concurrency limit for all). Defaults to one per judge. */
  http?: HttpClient;
  /** OpenAI-compatible scoring mode. Defaults to `logprobs`. */
  mode?: "logprobs" | "text";
  /** Least probability mass on number tokens before a logprob score is null. Defaults to 0.25. */
  minProbabilityMass?: number;
  /** For `local:` judges: load the judge model into this engine rather than one of its own. */
  engine?: import("../engine/Engine.js").Engine;
}

export const JUDGE_SPEC_HELP =
  "demo | openai:MODEL[@BASEURL] | anthropic:MODEL | http(s)://HOST/v1#MODEL | local:PATH.gguf (an instruct model)";

/** Judge names and their factories; plug-ins such as the demo world add theirs. */
const namedJudges = new Map<string, () => Judge | Promise<Judge>>();

export function registerJudge(name: string, create: () => Judge | Promise<Judge>): void {
  namedJudges.set(name, create);
}

function bad(spec: string, why: string): PersonaError {
  return new PersonaError("E_BAD_INPUT", `bad judge "${spec}": ${why} (expected ${JUDGE_SPEC_HELP})`);
}

export async function resolveJudge(spec: string, opts: ResolveJudgeOptions = {}): Promise<Judge> {
  const s = spec.trim();
  const common = {
    apiKey: opts.apiKey,
    httpOptions: opts.httpOptions,
    http: opts.http,
  };
  const openaiExtras = { mode: opts.mode, minProbabilityMass: opts.minProbabilityMass };

  const named = namedJudges.get(s);
  if (named) return named();

  if (/^https?:\/\//i.test(s)) {
    const hash = s.indexOf("#");
    const model = hash >= 0 ? s.slice(hash + 1).trim() : "";
    if (!model) throw bad(spec, "an OpenAI-compatible URL needs the model after '#', e.g. http://localhost:8000/v1#qwen2.5-7b");
    return new OpenAIJudge({ ...common, ...openaiExtras, model, baseURL: s.slice(0, hash) });
  }

  const colon = s.indexOf(":");
  const scheme = colon > 0 ? s.slice(0, colon).toLowerCase() : "";
  const rest = colon > 0 ? s.slice(colon + 1).trim() : "";
  switch (scheme) {
    case "openai": {
      // The base URL starts at the last "@http"; a model name may itself contain "@".
      const m = /^(.*)@(https?:\/\/.+)$/i.exec(rest);
      const model = (m ? m[1] : rest)?.trim();
      if (!model) throw bad(spec, "missing model name");
      return new OpenAIJudge({ ...common, ...openaiExtras, model, ...(m?.[2] && { baseURL: m[2] }) });
    }
    case "anthropic":
      if (!rest) throw bad(spec, "missing model name");
      return new AnthropicJudge({ ...common, model: rest });
    case "local": {
      if (!rest) throw bad(spec, "missing model path");
      // Imported on use: API-judge users never load the engine.
      const { LocalJudge } = await import("./local.js");
      return LocalJudge.open(rest, {
        ...(opts.minProbabilityMass !== undefined && { minProbabilityMass: opts.minProbabilityMass }),
        ...(opts.engine && { engine: opts.engine }),
      });
    }
    default:
      throw bad(spec, "unknown kind");
  }
}
