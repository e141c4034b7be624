/**
 * The coordinator side of a distributed run: shards become BullMQ jobs (id = run id + shard key,
 * so re-adding one is a no-op while it exists), a bounded window of them is in the queue at a
 * time, and results are taken in shard order, handed to `onResult`, and only then removed from
 * Redis. A coordinator killed at any moment loses nothing: finished shards are either in its run
 * directory or still in Redis as completed jobs, which a re-run picks up instead of redoing them.
 * A shard missing from Redis (a restart without persistence) is enqueued again; a lost connection
 * is waited for.
 */
import { type Job, Queue, QueueEvents } from "bullmq";
import { PersonaError } from "../errors.js";
import { checkReachable, connectionOf, queueName } from "./connection.js";
import type { ShardJob, ShardRunner, ShardStats } from "./runner.js";
import type { QueueAddress } from "./url.js";

export interface QueueRunnerOptions {
  /** Shards in the queue at once (bounds Redis memory and the coordinator's buffered results). Defaults to 32. */
  window?: number;
  /** Tries per shard for ordinary failures (an engine crash); a worker that dies mid-shard is retried on top. Defaults to 3. */
  attempts?: number;
  /** How long Redis may stay unreachable before the run fails (it resumes when re-run). Defaults to 5 minutes. */
  unreachableMs?: number;
  /** Poll period for shard states (events wake it sooner). Defaults to 500 ms. */
  pollMs?: number;
  /** Lines for the user: workers missing, Redis lost and back. */
  onNote?(text: string): void;
}

/** The job a worker receives. */
export interface ShardJobData<C = unknown, D = unknown> {
  runId: string;
  key: string;
  common: C;
  data: D;
}

interface Pending<D> {
  key: string;
  id: string;
  data: D;
  done: boolean;
  /** Times enqueued again after Redis lost it. */
  requeued: number;
  result?: unknown;
  /** Found finished in Redis when enqueued: an earlier coordinator's shard. */
  reused?: boolean;
}

export class QueueRunner implements ShardRunner {
  private constructor(
    private readonly address: QueueAddress,
    private readonly queue: Queue,
    private readonly events: QueueEvents,
    private readonly opts: QueueRunnerOptions,
  ) {}

  static async connect(address: QueueAddress, opts: QueueRunnerOptions = {}): Promise<QueueRunner> {
    await checkReachable(address);
    const connection = connectionOf(address);
    const queue = new Queue(queueName(address), { connection });
    const events = new QueueEvents(queueName(address), { connection });
    const runner = new QueueRunner(address, queue, events, opts);
    // Connection errors surface as failed calls in the loop below (reported there); unhandled 'error' events would kill the process.
    queue.on("error", () => undefined);
    events.on("error", () => undefined);
    await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);
    return runner;
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.events.close(), this.queue.close()]);
  }

  /** Workers connected to the queue now. */
  workers(): Promise<number> {
    return this.queue.getWorkersCount();
  }

  async run<C, D, R>(job: ShardJob<C, D, R>): Promise<ShardStats> {
    const window = this.opts.window ?? 32;
    const pollMs = this.opts.pollMs ?? 500;
    const unreachableMs = this.opts.unreachableMs ?? 5 * 60_000;
    const note = this.opts.onNote ?? (() => undefined);
    const stats: ShardStats = { shards: 0, reused: 0, retried: 0 };
    const pending: Pending<D>[] = [];
    const source = job.shards[Symbol.asyncIterator]();
    let exhausted = false;
    let downSince: number | undefined;

    // Events only shorten the wait; the poll below is what is relied on (events can be missed across a reconnect).
    let wake: (() => void) | undefined;
    const onEvent = ({ jobId }: { jobId: string }) => {
      if (pending.some((p) => p.id === jobId)) wake?.();
    };
    this.events.on("completed", onEvent);
    this.events.on("failed", onEvent);

    if ((await this.workers()) === 0) note(`no worker is connected to ${this.address.url} yet; shards wait until one is (persona worker --queue ${this.address.url} --model FILE)`);
    try {
      for (;;) {
        job.signal?.throwIfAborted();
        try {
          while (!exhausted && pending.length < window) {
            const next = await source.next();
            if (next.done) {
              exhausted = true;
              break;
            }
            const p: Pending<D> = { key: next.value.key, id: jobIdOf(job.runId, next.value.key), data: next.value.data, done: false, requeued: 0 };
            pending.push(p);
            await this.enqueue(job, p);
          }
          for (const p of pending) if (!p.done) await this.check(job, p, stats);
          if (downSince !== undefined) note(`Redis at ${this.address.url} is back; continuing`);
          downSince = undefined;
        } catch (e) {
          if (e instanceof PersonaError || (e as Error).name === "AbortError") throw e;
          // Redis went away mid-call: wait for it (BullMQ reconnects), give up after unreachableMs.
          const now = Date.now();
          if (downSince === undefined) {
            downSince = now;
            note(`lost Redis at ${this.address.url} (${(e as Error).message}); waiting for it`);
          } else if (now - downSince > unreachableMs) {
            throw new PersonaError("E_QUEUE", `Redis at ${this.address.url} unreachable for ${Math.round(unreachableMs / 1000)} s; finished shards are kept, re-run the same command to resume`, { cause: e });
          }
        }
        while (pending[0]?.done) {
          const p = pending.shift()!;
          await job.onResult(p.key, p.result as R);
          stats.shards++;
          // Only now is the result safe in the run directory; until then Redis keeps it for a re-run.
          await this.queue.remove(p.id).catch(() => undefined);
        }
        if (exhausted && pending.length === 0) return stats;
        if (pending[0]?.done) continue;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, pollMs);
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        wake = undefined;
      }
    } finally {
      this.events.off("completed", onEvent);
      this.events.off("failed", onEvent);
    }
  }

  /** Adds the shard's job; a job left failed by an earlier run is cleared first, so it is tried afresh. */
  private async enqueue<C, D, R>(job: ShardJob<C, D, R>, p: Pending<D>): Promise<void> {
    const existing = await this.queue.getJob(p.id);
    const state = existing ? await existing.getState() : undefined;
    if (state === "failed") await existing!.remove();
    if (state === "completed") p.reused = true;
    const data: ShardJobData<C, D> = { runId: job.runId, key: p.key, common: job.common, data: p.data };
    await this.queue.add(job.kind, data, {
      jobId: p.id,
      attempts: this.opts.attempts ?? 3,
      backoff: { type: "exponential", delay: 1000 },
      removeOnComplete: false,
      removeOnFail: false,
    });
  }

  private async check<C, D, R>(job: ShardJob<C, D, R>, p: Pending<D>, stats: ShardStats): Promise<void> {
    // State first, then the job: a job read before its state could be from before it finished.
    const state = await this.queue.getJobState(p.id);
    const j = state === "unknown" ? undefined : ((await this.queue.getJob(p.id)) as Job | undefined);
    // A job gone from Redis (restarted without persistence), or left half-written by a worker
    // that finished it across the restart: enqueued again under a new id, so that a stale
    // worker's late writes to the old one cannot mix with the new attempt.
    if (!j || (state === "completed" && (j.finishedOn === undefined || j.returnvalue == null))) {
      this.opts.onNote?.(`shard ${p.key} is no longer in Redis (restarted without persistence?); enqueued again`);
      p.id = `${jobIdOf(job.runId, p.key)}.${++p.requeued}`;
      return this.enqueue(job, p);
    }
    if (state === "failed") {
      throw new PersonaError("E_QUEUE", `shard ${p.key} failed on the workers after ${j.attemptsMade} attempt(s): ${j.failedReason}`);
    }
    if (state !== "completed") return;
    p.done = true;
    p.result = j.returnvalue;
    if (j.attemptsStarted > 1) stats.retried++;
    if (p.reused) stats.reused++;
  }
}

/** BullMQ job ids may not contain ':' (its key separator). */
function jobIdOf(runId: string, key: string): string {
  return `${runId}.${key}`.replace(/:/g, "_");
}
