/**
 * Command-line numbers and lists, through the real `persona` program in-process (commander
 * parsing, our argument parsers, the engine with the values that pass): sampling settings, token
 * counts, seeds, thread counts, batch sizes, layers and coefficients.
 */
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { numberText } from "../mutate.js";
import { runCommands, type FuzzCase, type Target } from "../target.js";
import { tinyModelWithVectors } from "./vectors.js";

interface CliSeed {
  model: Uint8Array;
  vectors: Uint8Array;
}

/** Flags that take numbers, per command, with a sane value for the ones not being fuzzed. */
const COMMANDS: { argv: string[]; numbers: [string, string][] }[] = [
  {
    argv: ["generate", "--model", "model.gguf", "-p", "Hi"],
    numbers: [["-t", "0"], ["--top-p", "1"], ["--top-k", "0"], ["--min-p", "0"], ["--seed", "0"], ["--max-tokens", "3"], ["--min-tokens", "0"], ["-n", "1"], ["--threads", "1"]],
  },
  { argv: ["vectors", "export", "v.safetensors", "--out", "o.gguf", "--force"], numbers: [["--coef", "1"], ["--layer", "1"]] },
  { argv: ["activations", "--model", "model.gguf", "--input", "pairs.jsonl", "--out", "a.safetensors"], numbers: [["--batch-tokens", "64"], ["--threads", "1"]] },
  { argv: ["model", "info", "--model", "model.gguf", "--json"], numbers: [["--threads", "1"]] },
];

function fuzzedValue(rng: Rng, flag: string): string {
  const v = fuzzedText(rng, flag);
  // A valid thread count above the 2 cores makes llama.cpp's busy-waiting workers crawl (the
  // campaign's only "hang"): slow as asked, not a bug. Odd spellings and absurd counts stay.
  return flag === "--threads" && Number.isInteger(Number(v)) && Number(v) > 2 && Number(v) <= 512 ? "2" : v;
}

function fuzzedText(rng: Rng, flag: string): string {
  if (flag === "--layer" && rng.chance(0.4)) return rng.pick(["best", "1,2", "1,,2", "0", "2", "3", " 1", "1,-1", "१"]);
  // Large but valid counts take long to generate without being wrong; numberText still tries absurd ones.
  if (flag === "--max-tokens" && rng.chance(0.5)) return rng.pick(["1", "2", "64", "65", "1000"]);
  return numberText(rng);
}

export const cliTarget: Target<CliSeed> = {
  name: "cli",
  description: "numbers and lists on the command line (generate sampling flags, token counts, seeds, threads, export layers/coef)",
  setup: tinyModelWithVectors,
  async make(rng, seed): Promise<FuzzCase> {
    const cmd = rng.pick(COMMANDS);
    const argv = [...cmd.argv];
    const fuzzed: string[] = [];
    for (const [flag, sane] of cmd.numbers) {
      const hit = rng.chance(0.4);
      const value = hit ? fuzzedValue(rng, flag) : sane;
      if (hit) fuzzed.push(`${flag} ${JSON.stringify(value)}`);
      // `--flag=value` keeps values that start with "-" from being read as flags.
      if (flag.startsWith("--") && rng.chance(0.5)) argv.push(`${flag}=${value}`);
      else argv.push(flag, value);
    }
    return {
      files: { "model.gguf": seed.model, "v.safetensors": seed.vectors, "pairs.jsonl": '{"prompt":"Hi","response":" there"}\n' },
      commands: [argv],
      note: fuzzed.join(", ") || "no flag fuzzed",
    };
  },
  run: (c, env) => runCommands(env, c.commands),
};
