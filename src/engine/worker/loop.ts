/**
 * A long-lived decode loop inside the worker: one context sized when the loop opens, a scheduler
 * whose slots requests join and leave, and a step driven from the worker's event loop (one decode
 * per macrotask), so new requests, cancels and other messages are handled between two steps.
 */
import { PersonaError } from "../../errors.js";
import { Scheduler, type Job, type JobEvents, type JobResult, type SchedulerStats } from "../batching.js";
import type { NativeContext } from "../native/NativeContext.js";
import type { NativeModel } from "../native/NativeModel.js";
import { NativeSampler } from "../native/NativeSampler.js";

export interface LoopStats extends SchedulerStats {
  /** KV cells of the loop's context (slots × cells per slot, rounded up). */
  nCtx: number;
  /** Contexts the engine created for this model so far (a loop never adds one after it opened). */
  contextsCreated: number;
}

export interface LoopRequestEvents extends JobEvents {
  onError(error: unknown): void;
}

export class WorkerLoop {
  private readonly scheduler: Scheduler;
  private readonly requests = new Map<number, LoopRequestEvents>();
  private running = false;
  private closed = false;

  constructor(
    readonly modelId: number,
    private readonly model: NativeModel,
    private readonly ctx: NativeContext,
    /** Tokens (prompt + new ones) one request may hold. */
    readonly cellsPerSlot: number,
    private readonly contextsCreated: () => number,
  ) {
    this.scheduler = new Scheduler(ctx, (s) => new NativeSampler(model.api, ctx, s), model.eogTokens, {
      slots: ctx.options.nSeqMax,
      reusePrefix: true,
      partialPrompts: true,
      fork: true,
    });
  }

  /** Queues a validated job; it joins the loop at the next step with a free slot. */
  submit(key: number, job: Job, events: LoopRequestEvents): void {
    if (this.closed) throw new PersonaError("E_DISPOSED", "decode loop closed");
    const needed = job.prompt.length + (job.forced?.length ?? 0) + (job.sampling?.maxTokens ?? 0);
    if (needed > this.cellsPerSlot) {
      // Worded for a server's users too: a text prompt's length is first known here.
      throw new PersonaError(
        "E_TOO_LONG",
        `the request needs ${needed} tokens of context (${job.prompt.length} prompt + ${needed - job.prompt.length} more) but a slot holds ${this.cellsPerSlot}`,
      );
    }
    this.requests.set(key, events);
    this.scheduler.submit(key, job, {
      onPrompt: events.onPrompt?.bind(events),
      onToken: events.onToken?.bind(events),
      onResult: (r: JobResult) => {
        this.requests.delete(key);
        if (job.sampling) r.text = this.model.detokenize(r.tokens, false);
        events.onResult(r);
      },
    });
    this.kick();
  }

  /** Ends request `key` with `why` (its slot is freed before the next step); unknown keys are ignored. */
  cancel(key: number, why: PersonaError): void {
    const events = this.requests.get(key);
    if (!events) return;
    this.requests.delete(key);
    this.scheduler.cancel(key);
    events.onError(why);
  }

  stats(): LoopStats {
    return { ...this.scheduler.stats(), nCtx: this.ctx.options.nCtx, contextsCreated: this.contextsCreated() };
  }

  /** Fails every request with `why` and frees the context. Idempotent. */
  close(why: PersonaError): void {
    if (this.closed) return;
    this.closed = true;
    this.failAll(why);
    this.ctx.free();
  }

  private failAll(why: unknown): void {
    this.scheduler.clear();
    const pending = [...this.requests.values()];
    this.requests.clear();
    for (const events of pending) events.onError(why);
  }

  private kick(): void {
    if (this.running || this.closed) return;
    this.running = true;
    setImmediate(this.tick);
  }

  private readonly tick = (): void => {
    if (this.closed) {
      this.running = false;
      return;
    }
    try {
      this.scheduler.step();
    } catch (e) {
      // A failed decode leaves the batch's cells unknown: every request in flight fails, the KV
      // cache is cleared, and the loop keeps serving new requests.
      this.failAll(e);
    }
    if (this.scheduler.busy) setImmediate(this.tick);
    else this.running = false;
  };
}
