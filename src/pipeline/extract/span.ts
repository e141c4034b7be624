/**
 * The trait's span (`persona extract --span K`): per layer, the top K directions of the kept pairs'
 * last-prompt-token differences (pos − neg of the same pair, question and rollout), an orthonormal
 * basis that CAFT ablates whole. It needs every pair's difference at once (pairs × (n_layer+1) ×
 * n_embd floats, e.g. 190 pairs on the demo model: 0.9 MB; 1,000 pairs of a 28-layer 3,584-wide
 * model: 416 MB), so it is opt-in and always runs here, not on a queue's workers.
 */
import type { Model } from "../../engine/Model.js";
import { PersonaError } from "../../errors.js";
import { type SpanMatrix, topDirections } from "../../vectors/span.js";
import type { CaptureItem } from "./capture.js";

/** `items` are the kept pairs in order, pos then neg; returns the prompt_last span of `k` directions. */
export async function capturePromptLastSpan(model: Model, items: readonly CaptureItem[], k: number, opts: { signal?: AbortSignal; onSample?(done: number, total: number): void } = {}): Promise<SpanMatrix> {
  const { nLayer, nEmbd } = model.info;
  const pairs = items.length / 2;
  if (!Number.isInteger(pairs) || items.some((it, i) => it.polarity !== (i % 2 === 0 ? "pos" : "neg"))) throw new PersonaError("E_INTERNAL", "span capture needs pos/neg pairs in order");
  if (!Number.isInteger(k) || k < 1 || k > Math.min(nEmbd, pairs)) {
    throw new PersonaError("E_BAD_INPUT", `--span ${k}: the span needs 1 ≤ K ≤ min(n_embd ${nEmbd}, kept pairs ${pairs})`);
  }
  // diffs[l][pair]: the pair's difference at layer l.
  const diffs = Array.from({ length: nLayer + 1 }, () => new Array<Float32Array>(pairs));
  const chunk = 64;
  for (let start = 0; start < items.length; start += chunk) {
    const part = items.slice(start, start + chunk);
    const samples = [];
    for (const it of part) samples.push(await model.encodeConversation([...it.messages, { role: "assistant", content: it.response }]));
    const acts = await model.capture(samples, { ...(opts.signal && { signal: opts.signal }) });
    for (let i = 0; i < part.length; i += 2) {
      const [pos, neg] = [acts[i]!.promptLast, acts[i + 1]!.promptLast];
      const pair = (start + i) / 2;
      for (let l = 0; l <= nLayer; l++) diffs[l]![pair] = Float32Array.from({ length: nEmbd }, (_, e) => pos[l * nEmbd + e]! - neg[l * nEmbd + e]!);
    }
    opts.onSample?.(start + part.length, items.length);
  }
  const data = new Float32Array((nLayer + 1) * k * nEmbd);
  for (let l = 0; l <= nLayer; l++) topDirections(diffs[l]!, k, nEmbd).forEach((r, j) => data.set(r, (l * k + j) * nEmbd));
  return { nLayerPlus1: nLayer + 1, k, nEmbd, data };
}
