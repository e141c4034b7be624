/**
 * The benchmarks' ≥50M-parameter random-weight model (llama, F16, 11 layers × 640, ChatML
 * template), written once into .cache/bench: big enough that a decode step's compute dominates
 * its bookkeeping, as with real models.
 */
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { randomModelParamCount, writeSyntheticModel, type SyntheticModelConfig } from "../src/engine/gguf/synthetic.js";

export const BENCH_MODEL_CFG: SyntheticModelConfig = {
  arch: "llama",
  nLayer: 11,
  nEmbd: 640,
  nHead: 10,
  nHeadKv: 5,
  nFf: 1792,
  contextLength: 2048,
  seed: 1,
  type: "f16",
  name: "bench-llama-52m",
};

export const benchModelPath = path.resolve(".cache/bench/bench-llama-52m-f16.gguf");

/** The model's path, after writing it if it is not there yet. */
export async function ensureBenchModel(): Promise<string> {
  if (!existsSync(benchModelPath)) {
    mkdirSync(path.dirname(benchModelPath), { recursive: true });
    console.error(`writing ${randomModelParamCount(BENCH_MODEL_CFG) / 1e6}M-parameter benchmark model to ${benchModelPath} ...`);
    await writeSyntheticModel(benchModelPath, BENCH_MODEL_CFG);
  }
  return benchModelPath;
}
