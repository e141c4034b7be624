import type { Command } from "commander";
import { Engine } from "../../engine/Engine.js";
import type { GpuChoice } from "../../engine/ffi/discover.js";
import { fingerprintModel } from "../../pipeline/rundir.js";
import { UnrecoverableError } from "bullmq";
import { refuseUntravelledJudge } from "../../pipeline/rollout-shards.js";
import { shardHandlers } from "../../pipeline/shards.js";
import { resolveJudge } from "../../judge/resolve.js";
import type { Judge } from "../../judge/types.js";
import { ModelPool } from "../../queue/models.js";
import { parseQueueUrl } from "../../queue/url.js";
import { ShardWorker } from "../../queue/worker.js";
import { floatArg, intArg } from "../args/numbers.js";
import { type EngineFlags, resolveModelPath, withRuntimeFlags } from "../engine.js";
import { note } from "../output.js";

interface WorkerFlags {
  queue: string;
  model: string[];
  concurrency: number;
  stalledAfter: number;
  threads?: number;
  gpu?: GpuChoice;
  offline?: boolean;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/**
 * The judges the coordinators' shards name, each opened on first use and kept. A judge this
 * worker cannot open (a local: file, a missing API key) fails the shard for good: no retry here helps.
 */
function judgeOpener(): (spec: string) => Promise<Judge> {
  const judges = new Map<string, Promise<Judge>>();
  return (spec) => {
    let j = judges.get(spec);
    if (!j) {
      j = (async () => {
        try {
          refuseUntravelledJudge(spec);
          return await resolveJudge(spec);
        } catch (e) {
          judges.delete(spec);
          throw new UnrecoverableError(`this worker cannot open the judge ${spec}: ${(e as Error).message}`);
        }
      })();
      judges.set(spec, j);
    }
    return j;
  };
}

/** `persona worker`: takes the shards of distributed runs (`--queue` on screen, extract, eval, sweep, monitor) from Redis and runs them here. */
export function register(program: Command): void {
  withRuntimeFlags(
    program
      .command("worker")
      .description("run shards of distributed runs (screen, extract, eval, sweep, monitor with --queue) from a Redis queue, until stopped")
      .requiredOption("--queue <url>", "Redis holding the queue: redis://HOST:PORT[/DB], as given to the coordinator")
      .requiredOption("-m, --model <ref>", "a model file this worker serves (repeatable): a path, demo, or hf:...; shards name models by content, not by path", collect)
      .option("-c, --concurrency <n>", "shards run at once in this process (they share its models and threads)", intArg(1), 1)
      .option("--stalled-after <s>", "a worker silent this long (killed, frozen) has its shards handed to other workers", floatArg(1), 30),
  )
    .addHelpText(
      "after",
      `
Each model is fingerprinted at start and loaded on the first shard that needs it, then kept. A
shard names its model by content: a worker without that exact file fails the shard with a clear
message rather than run it on another model. Stop with Ctrl-C or SIGTERM: running shards finish
first (a second signal stops at once; their shards go to other workers after --stalled-after).
A worker that dies is noticed by the others after --stalled-after seconds (every worker on a
queue should use the same value) and its shards are redone; nothing is lost or counted twice.

Shards of extract, eval, sweep and monitor are judged here too, with the coordinator's --judge
spec: demo needs nothing, an API judge needs its key in this worker's environment
(OPENAI_API_KEY, ANTHROPIC_API_KEY) and a judge server URL must be reachable from here; a
local: judge is refused by the coordinator (it is a file on that machine).

Examples:
  persona worker --queue redis://10.0.0.5:6379 --model models/base.gguf
  persona worker --queue redis://localhost:6379/2 --model a.gguf --model b.gguf --concurrency 2
`,
    )
    .action(async function (this: Command, opts: WorkerFlags) {
      const address = parseQueueUrl(opts.queue);
      const globals = this.optsWithGlobals() as EngineFlags;
      const paths: string[] = [];
      for (const m of opts.model) paths.push(await resolveModelPath(m, opts));
      const engine = await Engine.create({ verbose: globals.verbose ?? false, threads: opts.threads, gpu: opts.gpu });
      try {
        const models = await ModelPool.open(engine, paths, (p) => fingerprintModel({ path: p, adapters: [] }));
        const worker = await ShardWorker.start(address, {
          handlers: shardHandlers(judgeOpener()),
          models,
          concurrency: opts.concurrency,
          stalledAfterMs: opts.stalledAfter * 1000,
          onStart: (e) => note(`${e.kind} ${e.key}: started`),
          onDone: (e) => note(`${e.kind} ${e.key}: ${e.error === undefined ? "done" : `failed: ${e.error}`} in ${(e.ms / 1000).toFixed(2)} s`),
          onNote: note,
        });
        note(`worker on ${opts.queue}, concurrency ${opts.concurrency}, models: ${models.list().map((f) => `${f.path} (${f.hash})`).join(", ")}`);
        await new Promise<void>((resolve) => {
          let stopping = false;
          const stop = () => {
            note(stopping ? "stopping now" : "finishing the running shards (signal again to stop at once)");
            void worker.close(stopping).then(resolve);
            stopping = true;
          };
          process.on("SIGINT", stop);
          process.on("SIGTERM", stop);
        });
      } finally {
        await engine.dispose();
      }
    });
}
