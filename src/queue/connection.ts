/** The BullMQ queue every coordinator and worker of one Redis database shares, and a fast reachability check. */
import { Redis } from "ioredis";
import { PersonaError } from "../errors.js";
import type { QueueAddress } from "./url.js";

/**
 * One queue per Redis database; job names say the shard kind, job data names the model by content.
 * The database is in the name too because BullMQ counts a queue's workers by client name, server-wide.
 */
export function queueName(a: QueueAddress): string {
  return `persona-shards-db${a.db}`;
}

/** Connection options for BullMQ: commands wait through a Redis restart instead of failing. */
export function connectionOf(a: QueueAddress): { host: string; port: number; db: number; maxRetriesPerRequest: null } {
  return { host: a.host, port: a.port, db: a.db, maxRetriesPerRequest: null };
}

/** Connects once and pings, so a wrong address fails at once with a clear message instead of waiting forever. */
export async function checkReachable(a: QueueAddress, timeoutMs = 5000): Promise<void> {
  const client = new Redis({ host: a.host, port: a.port, db: a.db, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: timeoutMs });
  client.on("error", () => undefined);
  try {
    await client.connect();
    await client.ping();
  } catch (e) {
    throw new PersonaError("E_QUEUE", `cannot reach Redis at ${a.url} (${(e as Error).message}); is redis-server running there?`, { cause: e });
  } finally {
    client.disconnect();
  }
}
