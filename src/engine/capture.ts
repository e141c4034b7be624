/**
 * Per-sample residual reductions, accumulated row by row as forward passes stream through the
 * hook callback: mean over prompt tokens, the last prompt token, mean over response tokens, at
 * every layer 0..n_layer. Sums are float64 so long sequences lose nothing; one accumulator per
 * in-flight sample, so memory does not grow with the number of samples.
 */
import { ROW_LAST_PROMPT, ROW_RESPONSE, type RowClass } from "./steering.js";

/** The three reductions of one sample, each `[n_layer+1, n_embd]` row-major. */
export interface SampleActivations {
  promptAvg: Float32Array;
  promptLast: Float32Array;
  responseAvg: Float32Array;
  nPromptTokens: number;
  nResponseTokens: number;
}

export const REDUCTIONS = ["response_avg", "prompt_avg", "prompt_last"] as const;
export type Reduction = (typeof REDUCTIONS)[number];

export class CaptureAccumulator {
  private readonly promptSum: Float64Array;
  private readonly responseSum: Float64Array;
  private readonly last: Float32Array;
  private readonly promptCount: Int32Array;
  private readonly responseCount: Int32Array;

  constructor(
    readonly nLayers: number,
    readonly nEmbd: number,
  ) {
    const size = nLayers * nEmbd;
    this.promptSum = new Float64Array(size);
    this.responseSum = new Float64Array(size);
    this.last = new Float32Array(size);
    this.promptCount = new Int32Array(nLayers);
    this.responseCount = new Int32Array(nLayers);
  }

  add(layer: number, rowClass: RowClass, row: Float32Array): void {
    const off = layer * this.nEmbd;
    const n = this.nEmbd;
    if (rowClass === ROW_RESPONSE) {
      const s = this.responseSum;
      for (let j = 0; j < n; j++) s[off + j]! += row[j]!;
      this.responseCount[layer]!++;
      return;
    }
    const s = this.promptSum;
    for (let j = 0; j < n; j++) s[off + j]! += row[j]!;
    this.promptCount[layer]!++;
    if (rowClass === ROW_LAST_PROMPT) this.last.set(row, off);
  }

  finish(): SampleActivations {
    const mean = (sum: Float64Array, counts: Int32Array) => {
      const out = new Float32Array(sum.length);
      for (let l = 0; l < this.nLayers; l++) {
        const c = counts[l]!;
        if (c === 0) continue;
        const off = l * this.nEmbd;
        for (let j = 0; j < this.nEmbd; j++) out[off + j] = sum[off + j]! / c;
      }
      return out;
    };
    return {
      promptAvg: mean(this.promptSum, this.promptCount),
      promptLast: this.last,
      responseAvg: mean(this.responseSum, this.responseCount),
      nPromptTokens: this.promptCount[0] ?? 0,
      nResponseTokens: this.responseCount[0] ?? 0,
    };
  }
}
