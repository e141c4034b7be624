/**
 * The one place the server touches the engine: a request goes in (templated prompt tokens,
 * sampling, steering, probes), a stream of events comes out (tokens as they are sampled, the
 * last prompt token's projections when known) and a final result. Everything above this module
 * is engine-agnostic, so the decode loop underneath can change without the HTTP layer noticing.
 */
import type { ResolvedProbes, SampleProjections } from "../engine/capture.js";
import type { Model } from "../engine/Model.js";
import type { ResolvedSteering } from "../engine/steering.js";
import type { GenerationResult } from "../engine/types.js";
import { PersonaError } from "../errors.js";

export interface BackendRequest {
  prompt: Int32Array;
  temperature: number;
  topP: number;
  seed: number;
  maxTokens: number;
  steering: ResolvedSteering;
  probes?: ResolvedProbes;
}

export type BackendEvent =
  /** The last prompt token's projections (one per probe), before the first generated token where the engine knows them then. */
  | { type: "prompt"; promptLast: Float64Array }
  | { type: "token"; token: number; piece: Uint8Array };

export interface BackendResult {
  tokens: Int32Array;
  text: string;
  finishReason: GenerationResult["finishReason"];
  projections?: SampleProjections;
}

export interface BackendStream extends AsyncIterable<BackendEvent> {
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
  /** Last-prompt-token projections of `prompt` under `steering`, without generating (for actions decided before the reply). */
  promptProjections(prompt: Int32Array, steering: ResolvedSteering, probes: ResolvedProbes, opts?: { signal?: AbortSignal }): Promise<Float64Array>;
  stats(): BackendStats;
  /** Cancels whatever runs and stops accepting work; idempotent. */
  dispose(): Promise<void>;
}

/** A push-to-pull event buffer: the engine's callbacks push, the HTTP handler iterates. */
class EventChannel<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private wake: (() => void) | undefined;
  private closed = false;

  push(item: T): void {
    this.items.push(item);
    this.wake?.();
  }

  close(): void {
    this.closed = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      const item = this.items.shift();
      if (item !== undefined) {
        yield item;
        continue;
      }
      if (this.closed) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }
}

/**
 * Serves one request at a time through `model.generate` (the engine's batch API): correct for
 * any steering mix, but concurrent requests wait for each other.
 */
export class SerialBackend implements Backend {
  readonly slots = 1;
  private tail: Promise<unknown> = Promise.resolve();
  private running = 0;
  private waiting = 0;
  private readonly controllers = new Set<AbortController>();
  private disposed = false;

  constructor(private readonly model: Model) {}

  submit(request: BackendRequest, opts: { signal?: AbortSignal } = {}): BackendStream {
    const channel = new EventChannel<BackendEvent>();
    const result = this.enqueue(async (signal) => {
      const [r] = await this.model.generate([{ prompt: request.prompt, seed: request.seed }], {
        temperature: request.temperature,
        topP: request.topP,
        maxTokens: request.maxTokens,
        steering: request.steering,
        ...(request.probes ? { probes: request.probes } : {}),
        parallel: 1,
        signal,
        onToken: (_i, token, piece) => channel.push({ type: "token", token, piece }),
      });
      // This engine path reports the prompt's projections only with the result.
      if (r!.projections) channel.push({ type: "prompt", promptLast: r!.projections.promptLast });
      return { tokens: r!.tokens, text: r!.text, finishReason: r!.finishReason, ...(r!.projections ? { projections: r!.projections } : {}) };
    }, opts.signal);
    result.then(
      () => channel.close(),
      () => channel.close(),
    );
    return { result, [Symbol.asyncIterator]: () => channel[Symbol.asyncIterator]() };
  }

  promptProjections(prompt: Int32Array, steering: ResolvedSteering, probes: ResolvedProbes, opts: { signal?: AbortSignal } = {}): Promise<Float64Array> {
    return this.enqueue(async (signal) => {
      const [p] = await this.model.project([{ tokens: prompt, promptLength: prompt.length }], probes, { steering, exact: false, signal });
      return p!.promptLast;
    }, opts.signal);
  }

  stats(): BackendStats {
    return { running: this.running, waiting: this.waiting };
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    for (const c of this.controllers) c.abort();
    await this.tail;
  }

  /** Runs `work` after everything queued before it; a request cancelled while waiting never reaches the engine. */
  private enqueue<T>(work: (signal: AbortSignal) => Promise<T>, outer: AbortSignal | undefined): Promise<T> {
    if (this.disposed) return Promise.reject(new PersonaError("E_DISPOSED", "the server is shutting down"));
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    outer?.addEventListener("abort", onAbort, { once: true });
    if (outer?.aborted) controller.abort();
    this.controllers.add(controller);
    this.waiting++;
    const run = this.tail.then(async () => {
      this.waiting--;
      if (controller.signal.aborted) throw new PersonaError("E_ABORTED", "request cancelled before it started");
      this.running++;
      try {
        return await work(controller.signal);
      } finally {
        this.running--;
      }
    });
    const done = run.finally(() => {
      outer?.removeEventListener("abort", onAbort);
      this.controllers.delete(controller);
    });
    this.tail = done.catch(() => undefined);
    return done;
  }
}
