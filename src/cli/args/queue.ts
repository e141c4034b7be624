/** `--queue redis://HOST:PORT[/DB]` on the long commands: their shards run on `persona worker`s instead of here. */
import type { Command } from "commander";
import { QueueRunner } from "../../queue/coordinator.js";
import { PersonaError } from "../../errors.js";
import { refuseUntravelledJudge } from "../../pipeline/rollout-shards.js";
import type { ShardRunner, ShardStats } from "../../queue/runner.js";
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

/** What `--queue` cannot send to workers, refused before any work: LoRA adapters (no worker file matches), a local: judge. */
export function refuseUntravelled(opts: { queue?: string; lora?: readonly unknown[] }, judgeSpec?: string): void {
  if (opts.queue === undefined) return;
  if (opts.lora?.length) throw new PersonaError("E_BAD_INPUT", "--queue does not carry LoRA adapters to workers; merge the adapter into the model first");
  if (judgeSpec !== undefined) refuseUntravelledJudge(judgeSpec);
}

/** The line a coordinator ends with. */
export function noteShards(s: ShardStats): void {
  note(`${s.shards} shards from the queue (${s.reused} finished before this run, ${s.retried} redone after a worker died or failed)`);
}
