/** What a `persona worker` can do: one handler per shard kind that a pipeline sends to the queue. */
import type { ShardHandler } from "../queue/worker.js";
import { screenShard } from "./screen.js";

export const SHARD_HANDLERS: Readonly<Record<string, ShardHandler>> = {
  screen: screenShard,
};
