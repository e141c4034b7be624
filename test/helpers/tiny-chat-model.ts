import { writeSyntheticModel } from "../../src/engine/gguf/synthetic.js";

export interface TinyChatModelOptions {
  nLayer: number;
  nEmbd: number;
  contextLength: number;
  seed: number;
}

/**
 * The random-weight llama the pipeline tests run on: 4 heads, a ChatML template, weights with
 * std 0.1 so generations vary with the seed and the steering. Only what a test varies is a
 * parameter.
 */
export function writeTinyChatModel(file: string, opts: TinyChatModelOptions): Promise<void> {
  return writeSyntheticModel(file, { arch: "llama", nHead: 4, nHeadKv: 4, nFf: 64, init: { std: 0.1 }, ...opts });
}
