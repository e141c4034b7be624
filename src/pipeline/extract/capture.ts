/**
 * The extraction forward passes (spec §2): each kept sample is its chat-templated system+user
 * prompt followed by the reply, and its three reductions stream into running means, one per
 * polarity and reduction, so memory does not grow with the number of samples. Samples are added
 * in input order whatever order they finish in, so the float64 sums, and the vectors, do not
 * depend on scheduling.
 */
import type { SampleActivations } from "../../engine/capture.js";
import type { Model } from "../../engine/Model.js";
import type { ChatMessage } from "../../engine/types.js";
import type { Polarity } from "../../traits/format.js";
import { RunningMean } from "../../vectors/math.js";

export interface CaptureItem {
  polarity: Polarity;
  /** `[system, user]` of the rollout. */
  messages: ChatMessage[];
  /** The rollout's reply. */
  response: string;
}

export interface ReductionMeans {
  responseAvg: RunningMean;
  promptAvg: RunningMean;
  promptLast: RunningMean;
}

export interface CaptureMeansOptions {
  /** Samples per `capture` call; bounds the token ids held at once. Defaults to 64. */
  chunk?: number;
  /** Called after each sample is added. */
  onSample?(done: number, total: number): void;
  signal?: AbortSignal;
}

function newMeans(size: number): ReductionMeans {
  return { responseAvg: new RunningMean(size), promptAvg: new RunningMean(size), promptLast: new RunningMean(size) };
}

function addSample(m: ReductionMeans, a: SampleActivations): void {
  m.responseAvg.add(a.responseAvg);
  m.promptAvg.add(a.promptAvg);
  m.promptLast.add(a.promptLast);
}

export async function captureMeans(model: Model, items: readonly CaptureItem[], opts: CaptureMeansOptions = {}): Promise<Record<Polarity, ReductionMeans>> {
  const size = (model.info.nLayer + 1) * model.info.nEmbd;
  const means: Record<Polarity, ReductionMeans> = { pos: newMeans(size), neg: newMeans(size) };
  const chunk = opts.chunk ?? 64;
  let done = 0;
  for (let start = 0; start < items.length; start += chunk) {
    const part = items.slice(start, start + chunk);
    const samples = [];
    for (const it of part) samples.push(await model.encodeConversation([...it.messages, { role: "assistant", content: it.response }]));
    // Out-of-order finishes wait here; at most the samples in flight at once.
    const waiting = new Map<number, SampleActivations>();
    let next = 0;
    await model.capture(samples, {
      signal: opts.signal,
      onSample: (i, a) => {
        waiting.set(i, a);
        for (let w = waiting.get(next); w; w = waiting.get(next)) {
          waiting.delete(next);
          addSample(means[part[next]!.polarity], w);
          next++;
          opts.onSample?.(++done, items.length);
        }
      },
    });
  }
  return means;
}
