/**
 * Keyed, seeded shards of a long command and the one interface that runs them: locally, one after
 * another in this process, or (src/queue/coordinator.ts) over BullMQ workers on other machines.
 * Either way `onResult` receives every shard's result exactly once and in shard order, so what a
 * pipeline appends to its run directory (and every sum it folds) is the same bytes either way.
 */

export interface Shard<D> {
  /** Unique within the run and stable across re-runs (e.g. the record range "128-191"). */
  key: string;
  data: D;
}

export interface ShardJob<C, D, R> {
  /** What the shards are (a worker's handler name): "screen". */
  kind: string;
  /** Identifies the run's configuration: the same id and key always mean the same work. */
  runId: string;
  /** What every shard of the run shares (model, settings), sent with each shard to a worker. */
  common: C;
  shards: AsyncIterable<Shard<D>>;
  /** The work of one shard in this process (the local run, and what a worker's handler does). */
  local(data: D): Promise<R>;
  /** Takes one finished shard, in shard order; the shard is only forgotten once this resolves. */
  onResult(key: string, result: R): Promise<void>;
  signal?: AbortSignal;
}

export interface ShardStats {
  /** Shards finished by this invocation. */
  shards: number;
  /** Of those, results found already finished in the queue (work of an earlier, killed coordinator). */
  reused: number;
  /** Of those, shards that a worker started more than once (it died or stalled, or the attempt failed). */
  retried: number;
}

export interface ShardRunner {
  run<C, D, R>(job: ShardJob<C, D, R>): Promise<ShardStats>;
}

/** The plain local run: each shard in turn, in this process. */
export const LOCAL_RUNNER: ShardRunner = {
  async run<C, D, R>(job: ShardJob<C, D, R>): Promise<ShardStats> {
    let shards = 0;
    for await (const s of job.shards) {
      job.signal?.throwIfAborted();
      await job.onResult(s.key, await job.local(s.data));
      shards++;
    }
    return { shards, reused: 0, retried: 0 };
  },
};
