/** What a `persona worker` can do: one handler per shard kind that a pipeline sends to the queue. */
import type { Judge } from "../judge/types.js";
import type { ShardHandler } from "../queue/worker.js";
import { CAPTURE_SHARD_KIND, captureShard } from "./extract/capture.js";
import { ROLLOUT_SHARD_KIND, rolloutShardHandler } from "./rollout-shards.js";
import { screenShard } from "./screen.js";

/** `judgeOf` opens the judge a `--judge` spec names on this machine (kept for the worker's life). */
export function shardHandlers(judgeOf: (spec: string) => Promise<Judge>): Readonly<Record<string, ShardHandler>> {
  return {
    screen: screenShard,
    [ROLLOUT_SHARD_KIND]: rolloutShardHandler(judgeOf),
    [CAPTURE_SHARD_KIND]: captureShard,
  };
}
