/**
 * The worker side: takes shards from the queue, runs each with the handler its kind names, on
 * the model its content hash names (loaded once per worker and kept). BullMQ's lock on an active
 * job is renewed while the worker lives; a worker that dies (SIGKILL, power cut) stops renewing
 * and its shard goes back to the queue for another worker after `stalledAfterMs`.
 */
import { hostname } from "node:os";
import { type Job, UnrecoverableError, Worker } from "bullmq";
import type { Model } from "../engine/Model.js";
import { checkReachable, connectionOf, queueName } from "./connection.js";
import type { ShardJobData } from "./coordinator.js";
import type { ModelPool, ModelRef } from "./models.js";
import type { QueueAddress } from "./url.js";

export interface ShardContext {
  model(ref: ModelRef): Promise<Model>;
  signal: AbortSignal;
}

/** What a worker does with one kind of shard: the `local` of the coordinator's ShardJob, with the run's common part. */
export type ShardHandler = (common: never, data: never, ctx: ShardContext) => Promise<unknown>;

export interface ShardEvent {
  kind: string;
  runId: string;
  key: string;
  ms: number;
  error?: string;
}

export interface WorkerOptions {
  handlers: Readonly<Record<string, ShardHandler>>;
  models: ModelPool;
  /** Shards run at once in this process (they share its models). Defaults to 1. */
  concurrency?: number;
  /** A worker silent this long is presumed dead and its shards go to others. Defaults to 30 s. */
  stalledAfterMs?: number;
  onStart?(e: Omit<ShardEvent, "ms">): void;
  onDone?(e: ShardEvent): void;
  /** Redis lost or back. */
  onNote?(text: string): void;
}

export class ShardWorker {
  private constructor(
    private readonly worker: Worker,
    private readonly abort: AbortController,
  ) {}

  static async start(address: QueueAddress, opts: WorkerOptions): Promise<ShardWorker> {
    await checkReachable(address);
    const abort = new AbortController();
    const stalledAfterMs = opts.stalledAfterMs ?? 30_000;
    const process = async (job: Job<ShardJobData>) => {
      const handler = opts.handlers[job.name];
      // A coordinator of another version: no retry on this worker can help.
      if (!handler) throw new UnrecoverableError(`this worker (persona on ${hostname()}) does not know shards of kind ${job.name}`);
      const { runId, key, common, data } = job.data;
      opts.onStart?.({ kind: job.name, runId, key });
      const t0 = performance.now();
      try {
        const ctx: ShardContext = { model: (ref) => opts.models.get(ref), signal: abort.signal };
        const result = await handler(common as never, data as never, ctx);
        opts.onDone?.({ kind: job.name, runId, key, ms: performance.now() - t0 });
        return result;
      } catch (e) {
        opts.onDone?.({ kind: job.name, runId, key, ms: performance.now() - t0, error: (e as Error).message });
        throw e;
      }
    };
    const worker = new Worker(queueName(address), process, {
      connection: connectionOf(address),
      concurrency: opts.concurrency ?? 1,
      lockDuration: stalledAfterMs,
      stalledInterval: stalledAfterMs,
      // A shard whose worker died is retried; one that stalls this often kills workers (out of memory?) and fails.
      maxStalledCount: 3,
    });
    let down = false;
    worker.on("error", (e) => {
      if (down) return;
      down = true;
      opts.onNote?.(`lost Redis at ${address.url} (${e.message}); waiting for it`);
    });
    worker.on("ready", () => {
      if (!down) return;
      down = false;
      opts.onNote?.(`Redis at ${address.url} is back`);
    });
    await worker.waitUntilReady();
    return new ShardWorker(worker, abort);
  }

  /** Stops taking shards; waits for the running ones unless `force`. */
  async close(force = false): Promise<void> {
    if (force) this.abort.abort();
    await this.worker.close(force);
  }
}
