/**
 * Continuous batching, as seen from the main thread: `model.openLoop(...)` sizes one context for
 * `slots` requests of up to `ctxPerSlot` tokens each, and requests join and leave its running
 * decode loop between steps. Each request streams events (`for await`) and settles `result`;
 * an AbortSignal (or leaving the `for await` early) frees its slot without touching the others.
 */
import { PersonaError } from "../errors.js";
import type { Job, JobResult } from "./batching.js";
import type { ResolvedProbes, SampleActivations, SampleProjections } from "./capture.js";
import type { ResolvedSteering } from "./steering.js";
import type { PromptText, SamplingOptions, TokenLogprob } from "./types.js";
import type { WorkerHost } from "./worker/host.js";
import type { LoopStats } from "./worker/loop.js";
import type { WorkerEvent } from "./worker/protocol.js";

export type { LoopStats };

export interface LoopOptions {
  /** Requests decoded at once; more wait in a queue. 1..256. */
  slots: number;
  /** Tokens one request may hold: prompt plus `maxTokens`. A request needing more is refused (E_TOO_LONG). */
  ctxPerSlot: number;
  /** Exact numerics (F32 KV cache, no flash attention). Defaults to false. */
  exact?: boolean;
  /** Most tokens per decode step (long prompts are fed in chunks of this). Defaults to 512, less for very large vocabularies. */
  batchTokens?: number;
}

export interface LoopRequest extends Omit<SamplingOptions, "seed"> {
  /**
   * Prompt token ids (already templated), or text the worker tokenizes as the request reaches it
   * (`model.chatPrompt(...)`): the token count is then known from `accepted`, and a prompt too long
   * for a slot fails there instead of at once.
   */
  prompt: Int32Array | PromptText;
  /**
   * Defaults to 256. 0 only reads the prompt: the `prompt` event (projections) and a result with no
   * tokens, and the slot keeps the prompt's cells for a next request that starts the same way.
   */
  maxTokens?: number;
  /** This request's sampling seed. Defaults to 0. */
  seed?: number;
  steering?: ResolvedSteering;
  /**
   * From `model.probes(...)`: projections of the last prompt token (in the `prompt` event), per
   * token when the probes ask, and the means in the result. The prompt mean covers the prompt
   * tokens that went through the model: a prefix reused from the slot's previous request is not
   * among them (`nPromptTokens` of the projections says how many were); one shared with a request
   * decoding the same prompt alongside is.
   */
  probes?: ResolvedProbes;
  /** Per generated token: its log-probability and this many most likely alternatives (0..20). Defaults to off. */
  logprobs?: number;
  /** Residual reductions of the request (see `Model.capture`). */
  capture?: boolean;
  captureLayers?: readonly number[];
}

export type StreamEvent =
  | {
      type: "prompt";
      nPromptTokens: number;
      /** Prompt tokens whose KV cells were reused from an earlier request in the slot, or shared with a request decoding the same prompt. */
      reusedTokens: number;
      /** The last prompt token's projection per probe (known before any token is generated). */
      projections?: Float64Array;
    }
  | {
      type: "token";
      /** Position among the generated tokens. */
      index: number;
      token: number;
      /** The token's bytes (may split a UTF-8 character). */
      piece: Uint8Array;
      /** Decoded text this token completes (bytes of a split character wait for the rest). */
      text: string;
      /** The token's projection per probe (per-token probes only). */
      projections?: Float32Array;
      logprob?: number;
      top?: TokenLogprob[];
    };

export interface LoopResult {
  tokens: Int32Array;
  text: string;
  finishReason: "stop" | "length";
  nPromptTokens: number;
  reusedTokens: number;
  projections?: SampleProjections;
  activations?: SampleActivations;
  /** Log-probability of each generated token (with `logprobs`). */
  tokenLogprobs?: Float64Array;
}

/** One request's events, as an async iterable, and its final result. */
export class GenerationStream implements AsyncIterable<StreamEvent> {
  /** Settles when the request ends: the result, or its error (E_ABORTED when cancelled). */
  readonly result: Promise<LoopResult>;
  /**
   * The prompt's token count once the worker has taken the request (at once for a prompt of
   * tokens); rejects as `result` does when the request fails before that (E_TOO_LONG).
   */
  readonly accepted: Promise<number>;
  private readonly buffer: StreamEvent[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  private error: unknown;
  private iterated = false;
  private settle!: { resolve(r: LoopResult): void; reject(e: unknown): void };
  private settleAccepted!: { resolve(n: number): void; reject(e: unknown): void };

  /** @internal `nPromptTokens` when known before the worker sees the request. */
  constructor(
    private readonly cancelRequest: () => void,
    nPromptTokens?: number,
  ) {
    this.result = new Promise<LoopResult>((resolve, reject) => (this.settle = { resolve, reject }));
    this.accepted = new Promise<number>((resolve, reject) => (this.settleAccepted = { resolve, reject }));
    // A caller who only iterates still sees the error there; no unhandled rejection.
    this.result.catch(() => undefined);
    this.accepted.catch(() => undefined);
    if (nPromptTokens !== undefined) this.accept(nPromptTokens);
  }

  /** Cancels the request: its slot is freed before the next decode step. */
  cancel(): void {
    if (!this.ended) this.cancelRequest();
  }

  /** @internal */
  accept(nPromptTokens: number): void {
    this.settleAccepted.resolve(nPromptTokens);
  }

  /** @internal */
  push(e: StreamEvent): void {
    this.buffer.push(e);
    this.wakeUp();
  }

  /** @internal */
  end(r: LoopResult | undefined, error?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    if (r) {
      this.accept(r.nPromptTokens);
      this.settle.resolve(r);
    } else {
      this.error = error;
      this.settleAccepted.reject(error);
      this.settle.reject(error);
    }
    this.wakeUp();
  }

  private wakeUp(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Events in order: `prompt`, then one `token` per generated token. Leaving the loop early cancels the request. */
  async *[Symbol.asyncIterator](): AsyncIterator<StreamEvent> {
    if (this.iterated) throw new PersonaError("E_BAD_INPUT", "a generation stream can be iterated once");
    this.iterated = true;
    try {
      for (;;) {
        const e = this.buffer.shift();
        if (e) yield e;
        else if (this.ended) {
          if (this.error !== undefined) throw this.error;
          return;
        } else await new Promise<void>((resolve) => (this.wake = resolve));
      }
    } finally {
      this.cancel();
    }
  }
}

/** Validates a loop request into a job (the worker checks token ids and shapes again). */
export type JobBuilder = (request: LoopRequest) => Job;

export class DecodeLoop implements AsyncDisposable {
  private closed = false;
  private nextKey = 1;
  private readonly inFlight = new Map<number, GenerationStream>();

  /** @internal */
  constructor(
    private readonly host: WorkerHost,
    private readonly id: number,
    readonly options: Readonly<Required<LoopOptions>>,
    private readonly buildJob: JobBuilder,
    private readonly onClose: (loop: DecodeLoop) => void,
  ) {}

  /**
   * Queues a request; it joins the loop at the next step with a free slot. Throws at once on
   * invalid input, E_TOO_LONG when prompt + maxTokens exceed `ctxPerSlot`, E_DISPOSED after dispose.
   */
  submit(request: LoopRequest, opts: { signal?: AbortSignal } = {}): GenerationStream {
    if (this.closed) throw new PersonaError("E_DISPOSED", "decode loop used after dispose()");
    const job = this.buildJob(request);
    const text = request.prompt instanceof Int32Array ? undefined : request.prompt;
    const needed = job.prompt.length + (job.sampling?.maxTokens ?? 0);
    // A text prompt's length is checked by the worker once it has the tokens.
    if (!text && needed > this.options.ctxPerSlot) {
      throw new PersonaError(
        "E_TOO_LONG",
        `the request needs ${needed} tokens of context (${job.prompt.length} prompt + ${job.sampling?.maxTokens ?? 0} max new) but this loop's slots hold ${this.options.ctxPerSlot}; shorten it or open the loop with a larger ctxPerSlot`,
      );
    }
    opts.signal?.throwIfAborted();
    const key = this.nextKey++;
    const signal = opts.signal;
    const cancel = () => {
      if (!this.inFlight.has(key)) return;
      void this.host.call({ op: "loopCancel", loopId: this.id, key }).catch(() => undefined);
    };
    const stream = new GenerationStream(cancel, text ? undefined : job.prompt.length);
    const onAbort = () => cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    this.inFlight.set(key, stream);
    const decoder = new TextDecoder();
    let index = 0;
    let nPromptTokens = job.prompt.length;
    const onEvent = (e: WorkerEvent) => {
      if (e.type === "accepted") {
        nPromptTokens = e.nPromptTokens;
        stream.accept(e.nPromptTokens);
      } else if (e.type === "prompt") {
        nPromptTokens = e.nPromptTokens;
        const p: StreamEvent = { type: "prompt", nPromptTokens: e.nPromptTokens, reusedTokens: e.reusedTokens };
        if (e.projections) p.projections = e.projections;
        stream.push(p);
      } else if (e.type === "token") {
        const t: StreamEvent = { type: "token", index: index++, token: e.token, piece: e.piece, text: decoder.decode(e.piece, { stream: true }) };
        if (e.projections) t.projections = e.projections;
        if (e.logprob !== undefined) t.logprob = e.logprob;
        if (e.top) t.top = e.top;
        stream.push(t);
      }
    };
    this.host
      .call<JobResult>({ op: "loopSubmit", loopId: this.id, key, job, ...(text ? { text: { text: text.text, addSpecial: text.addSpecial, parseSpecial: text.parseSpecial } } : {}) }, onEvent)
      .then(
        (r) => {
          const out: LoopResult = { tokens: r.tokens, text: r.text ?? "", finishReason: r.finishReason, nPromptTokens, reusedTokens: r.reusedTokens };
          if (r.projections) out.projections = r.projections;
          if (r.activations) out.activations = r.activations;
          if (r.tokenLogprobs) out.tokenLogprobs = r.tokenLogprobs;
          stream.end(out);
        },
        (e: unknown) => stream.end(undefined, e),
      )
      .finally(() => {
        this.inFlight.delete(key);
        signal?.removeEventListener("abort", onAbort);
      });
    return stream;
  }

  /** Requests submitted and not settled yet (active or queued), known without a round trip. */
  get pending(): number {
    return this.inFlight.size;
  }

  /** Slots in use, queued requests, tokens decoded and reused, and the context's size. */
  stats(): Promise<LoopStats> {
    if (this.closed) return Promise.reject(new PersonaError("E_DISPOSED", "decode loop used after dispose()"));
    return this.host.call({ op: "loopStats", loopId: this.id });
  }

  /** Cancels every request in flight (E_DISPOSED) and frees the loop's context. Idempotent. */
  async dispose(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.onClose(this);
    await this.host.call({ op: "loopClose", loopId: this.id }).catch(() => undefined);
  }

  /** @internal The model was freed (its loops with it). */
  markClosed(): void {
    this.closed = true;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}
