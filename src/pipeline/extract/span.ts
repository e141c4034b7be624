/**
 * The trait's span (`persona extract --span K`): per layer, the top K directions of the kept pairs'
 * last-prompt-token differences (pos − neg of the same pair, question and rollout), an orthonormal
 * basis that CAFT ablates whole. It needs every pair's difference at once (pairs × (n_layer+1) ×
 * n_embd floats, e.g. 190 pairs on the demo model: 0.9 MB; 1,000 pairs of a 28-layer 3,584-wide
 * model: 416 MB), so it is opt-in and always runs here, not on a queue's workers.
 */
import type { SampleActivations } from "../../engine/capture.js";
import type { ModelInfo } from "../../engine/types.js";
import { PersonaError } from "../../errors.js";
import { type SpanMatrix, topDirections } from "../../vectors/span.js";
import type { CaptureItem } from "./capture.js";

/**
 * Collects the prompt_last span of `k` directions from the capture pass (`captureMeans`'s
 * `onActivations`): `items` are the kept pairs in order, pos then neg.
 */
export function promptLastSpanCollector(info: Pick<ModelInfo, "nLayer" | "nEmbd">, items: readonly CaptureItem[], k: number): { add(index: number, acts: SampleActivations): void; finish(): SpanMatrix } {
  const { nLayer, nEmbd } = info;
  const pairs = items.length / 2;
  if (!Number.isInteger(pairs) || items.some((it, i) => it.polarity !== (i % 2 === 0 ? "pos" : "neg"))) throw new PersonaError("E_INTERNAL", "span capture needs pos/neg pairs in order");
  if (!Number.isInteger(k) || k < 1 || k > Math.min(nEmbd, pairs)) {
    throw new PersonaError("E_BAD_INPUT", `--span ${k}: the span needs 1 ≤ K ≤ min(n_embd ${nEmbd}, kept pairs ${pairs})`);
  }
  // diffs[l][pair]: the pair's difference at layer l; a pair's pos waits in `pos` for its neg.
  const diffs = Array.from({ length: nLayer + 1 }, () => new Array<Float32Array>(pairs));
  const pos = new Map<number, Float32Array>();
  let done = 0;
  return {
    add(index, acts) {
      const pair = index >> 1;
      if (index % 2 === 0) return void pos.set(pair, acts.promptLast);
      const p = pos.get(pair)!;
      pos.delete(pair);
      const neg = acts.promptLast;
      for (let l = 0; l <= nLayer; l++) diffs[l]![pair] = Float32Array.from({ length: nEmbd }, (_, e) => p[l * nEmbd + e]! - neg[l * nEmbd + e]!);
      done++;
    },
    finish() {
      if (done !== pairs) throw new PersonaError("E_INTERNAL", "span capture missed a pair");
      const data = new Float32Array((nLayer + 1) * k * nEmbd);
      for (let l = 0; l <= nLayer; l++) topDirections(diffs[l]!, k, nEmbd).forEach((r, j) => data.set(r, (l * k + j) * nEmbd));
      return { nLayerPlus1: nLayer + 1, k, nEmbd, data };
    },
  };
}
