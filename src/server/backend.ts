/**
 * The one place the server touches the engine: a request goes in (templated prompt tokens,
 * sampling, steering, probes), a stream of events comes out (tokens as they are sampled, the
 * last prompt token's projections when known) and a final result. Everything above this module
 * is engine-agnostic, so the decode loop underneath can change without the HTTP layer noticing.
 */
import type { ResolvedProbes, SampleProjections } from "../engine/capture.js";
import type { DecodeLoop, StreamEvent } from "../engine/DecodeLoop.js";
import type { Model } from "../engine/Model.js";
import type { ResolvedSteering } from "../engine/steering.js";
import type { GenerationResult, PromptText } from "../engine/types.js";
import { PersonaError } from "../errors.js";

export interface BackendRequest {
  /** Token ids, or templated text the engine tokenizes as it takes the request. */
  prompt: Int32Array | PromptText;
  temperature: number;
  topP: number;
  seed: number;
  maxTokens: number;
  /** End-of-generation is suppressed until this many tokens exist. */
  minTokens: number;
  steering: ResolvedSteering;
  probes?: ResolvedProbes;
}

/**
 * The loop's own events, passed on as they are (a copy per token was measurable on the server's
 * main thread): `prompt` first, with the last prompt token's projections when there are probes,
 * then one `token` per generated token.
 */
export type BackendEvent = StreamEvent;

export interface BackendResult {
  tokens: Int32Array;
  text: string;
  finishReason: GenerationResult["finishReason"];
  projections?: SampleProjections;
}

export interface BackendStream extends AsyncIterable<BackendEvent> {
  /** The prompt's token count once the engine has taken the request; rejects as `result` when it refused it (E_TOO_LONG). */
  readonly accepted: Promise<number>;
  /** Settles when the request ends; rejects with E_ABORTED when it was cancelled. */
  readonly result: Promise<BackendResult>;
}

export interface BackendStats {
  /** Requests being decoded now. */
  running: number;
  /** Requests accepted but not yet decoding. */
  waiting: number;
}

export interface Backend {
  /** Concurrent sequences the engine decodes. */
  readonly slots: number;
  submit(request: BackendRequest, opts?: { signal?: AbortSignal }): BackendStream;
  /**
   * Last-prompt-token projections of `prompt` under `steering`, before generating (for actions
   * decided before the reply), and the prompt's token count. `maxTokens` is the reply's: the prompt
   * is refused (E_TOO_LONG) as the reply's own request would be.
   */
  promptProjections(
    request: Pick<BackendRequest, "prompt" | "maxTokens" | "steering"> & { probes: ResolvedProbes },
    opts?: { signal?: AbortSignal },
  ): Promise<{ projections: Float64Array; nPromptTokens: number }>;
  stats(): BackendStats;
  /** Cancels whatever runs and stops accepting work; idempotent. */
  dispose(): Promise<void>;
}

/**
 * The engine's continuous-batching decode loop (`model.openLoop`): requests join and leave one
 * running loop between decode steps, each with its own steering and probes, so steered and
 * unsteered requests share a batch.
 */
export class LoopBackend implements Backend {
  private running = 0;
  private waiting = 0;

  private constructor(
    private readonly loop: DecodeLoop,
    readonly slots: number,
  ) {}

  static async open(model: Model, opts: { slots: number; ctxPerSlot: number }): Promise<LoopBackend> {
    return new LoopBackend(await model.openLoop({ slots: opts.slots, ctxPerSlot: opts.ctxPerSlot }), opts.slots);
  }

  submit(request: BackendRequest, opts: { signal?: AbortSignal } = {}): BackendStream {
    const { prompt, temperature, topP, seed, maxTokens, minTokens, steering, probes } = request;
    const stream = this.loop.submit({ prompt, temperature, topP, seed, maxTokens, minTokens, steering, ...(probes ? { probes } : {}) }, opts);
    // Counted as running from its first event; a request can also end before anyone reads its events.
    let phase: "waiting" | "running" | "done" = "waiting";
    this.waiting++;
    const start = () => {
      if (phase !== "waiting") return;
      phase = "running";
      this.waiting--;
      this.running++;
    };
    const result = stream.result.then(
      (r): BackendResult => ({ tokens: r.tokens, text: r.text, finishReason: r.finishReason, ...(r.projections ? { projections: r.projections } : {}) }),
    );
    void stream.result
      .catch(() => undefined)
      .then(() => {
        if (phase === "running") this.running--;
        else this.waiting--;
        phase = "done";
      });
    result.catch(() => undefined);
    // The loop's iterator, not a generator around it: each generator layer costs promises per token.
    // Leaving early still reaches the loop's `return`, which cancels the request.
    const iterator = (): AsyncIterator<BackendEvent> => {
      const inner = stream[Symbol.asyncIterator]();
      return {
        next: () => {
          const next = inner.next();
          if (phase !== "waiting") return next;
          return next.then((r) => {
            if (!r.done) start();
            return r;
          });
        },
        return: (value?: unknown) => inner.return!(value),
      };
    };
    return { accepted: stream.accepted, result, [Symbol.asyncIterator]: iterator };
  }

  async promptProjections(
    request: Pick<BackendRequest, "prompt" | "maxTokens" | "steering"> & { probes: ResolvedProbes },
    opts: { signal?: AbortSignal } = {},
  ): Promise<{ projections: Float64Array; nPromptTokens: number }> {
    // Leaving at the prompt event cancels the request: the token sampled with it (one more, if the
    // cancel reaches the worker after the next step) is all it generates.
    const stream = this.loop.submit(request, opts);
    for await (const e of stream) {
      if (e.type === "prompt" && e.projections) return { projections: e.projections, nPromptTokens: e.nPromptTokens };
    }
    throw new PersonaError("E_INTERNAL", "the decode loop reported no prompt projections");
  }

  stats(): BackendStats {
    return { running: this.running, waiting: this.waiting };
  }

  dispose(): Promise<void> {
    return this.loop.dispose();
  }
}
