/** The sampling flags every generating command shares, with its own defaults and wording. */
import type { Command } from "commander";
import { floatArg, intArg } from "./numbers.js";

export interface SamplingFlagDefaults {
  /** What one generation is called in the help ("rollout", "reply"). */
  unit: string;
  maxTokens: number;
  /** Defaults to 1. */
  temperature?: number;
  /** Prefixes each flag's help, e.g. "base replies: ". */
  prefix?: string;
  /** Help for --seed. Defaults to "random seed". */
  seedHelp?: string;
  /** Also accept -t for --temperature (where -t is not --trait). */
  shortTemperature?: boolean;
}

/** Adds --temperature, --max-tokens and --seed. */
export function withSamplingFlags(cmd: Command, d: SamplingFlagDefaults): Command {
  const p = d.prefix ?? "";
  return cmd
    .option(`${d.shortTemperature ? "-t, " : ""}--temperature <t>`, `${p}sampling temperature (0 = greedy)`, floatArg(0), d.temperature ?? 1)
    .option("--max-tokens <n>", `${p}most new tokens per ${d.unit}`, intArg(1), d.maxTokens)
    .option("--seed <s>", `${p}${d.seedHelp ?? "random seed"}`, intArg(0), 0);
}
