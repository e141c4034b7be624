/** `--queue redis://HOST:PORT[/DB]` on the long commands: their shards run on `persona worker`s instead of here. */
import type { Command } from "commander";
import { QueueRunner } from "../../queue/coordinator.js";
import type { ShardRunner } from "../../queue/runner.js";
import { parseQueueUrl } from "../../queue/url.js";
import { note } from "../output.js";

export const QUEUE_HELP = "run the shards on persona workers through Redis (BullMQ) at redis://HOST:PORT[/DB]; results are the same bytes as a local run";

export function withQueueFlag(cmd: Command): Command {
  return cmd.option("--queue <url>", QUEUE_HELP);
}

/** Runs `fn` with the queue's runner (connected, closed after), or with none for a local run. */
export async function withQueue<T>(url: string | undefined, fn: (runner: ShardRunner | undefined) => Promise<T>): Promise<T> {
  if (url === undefined) return fn(undefined);
  const runner = await QueueRunner.connect(parseQueueUrl(url), { onNote: note });
  try {
    note(`queue ${url}: ${await runner.workers()} worker(s) connected`);
    return await fn(runner);
  } finally {
    await runner.close();
  }
}
