/**
 * Screening through the queue against the plain local run, from one run on the demo model: the
 * same dataset scored in this process, then through a real redis-server by 1 and by 2
 * `persona worker` processes (the coordinator is this process); checks the three runs wrote the
 * same scores, and reports the queue's overhead per shard and the shard size it suggests.
 *   node --import tsx bench/queue.bench.ts [--samples 48] [--batch 8] [--max-tokens 32] [--threads 2]
 * Needs redis-server on the PATH (Debian: apt-get install redis-server).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { writeDemoDatasets } from "../src/demo/datasets.js";
import { DEMO_MODEL_PATH } from "../src/demo/model.js";
import { DEMO_TRAITS } from "../src/demo/traits.js";
import { Engine } from "../src/engine/Engine.js";
import { screenDataset, type ScreenTrait } from "../src/pipeline/screen.js";
import { QueueRunner } from "../src/queue/coordinator.js";
import type { ShardRunner } from "../src/queue/runner.js";
import { parseQueueUrl } from "../src/queue/url.js";
import { row } from "../src/vectors/format.js";
import { loadVectorSource } from "../src/vectors/steer.js";
import { HAS_REDIS, NO_REDIS_REASON, RedisServer } from "../test/helpers/redis.js";

const { values } = parseArgs({
  options: {
    samples: { type: "string", default: "48" },
    batch: { type: "string", default: "8" },
    "max-tokens": { type: "string", default: "32" },
    threads: { type: "string", default: "2" },
  },
});
if (!HAS_REDIS) {
  console.error(NO_REDIS_REASON);
  process.exit(1);
}
const n = Number(values.samples);
const batch = Number(values.batch);
const maxTokens = Number(values["max-tokens"]);
const threads = Number(values.threads);
const shards = Math.ceil(n / batch);

const dir = await mkdtemp(path.join(tmpdir(), "persona-queue-bench-"));
const redis = await RedisServer.start(dir);
const workers: ChildProcess[] = [];
const engine = await Engine.create({ gpu: "cpu", threads });
try {
  const model = await engine.loadModel(DEMO_MODEL_PATH);
  const [file] = (await writeDemoDatasets({ out: dir, traits: ["evil"], rows: n, mixed: [10] })).filter((x) => x.name === "mixed-10");
  const traits: ScreenTrait[] = [];
  for (const t of DEMO_TRAITS) {
    const v = await loadVectorSource(t, model.info);
    const layer = v.meta.bestLayer ?? model.info.nLayer;
    traits.push({ name: t, layer, vector: Float32Array.from(row(v.matrix, layer)) });
  }
  const screen = async (name: string, runner?: ShardRunner) => {
    const t0 = performance.now();
    const r = await screenDataset(model, { data: file!.path, traits, runDir: path.join(dir, name), maxTokens, chunkSize: batch, runner });
    return { s: (performance.now() - t0) / 1000, scores: await readFile(r.scoresPath, "utf8") };
  };
  /** `count` workers splitting `threads` between them, each ready (model fingerprinted, engine up) before timing. */
  const startWorkers = async (count: number) => {
    for (const w of workers.splice(0)) w.kill("SIGKILL");
    const each = Math.max(1, Math.floor(threads / count));
    await Promise.all(
      Array.from({ length: count }, () => {
        const w = spawn(process.execPath, ["--import", "tsx", "src/cli/bin.ts", "worker", "--queue", redis.url(), "--model", DEMO_MODEL_PATH, "--threads", String(each)], {
          stdio: ["ignore", "ignore", "pipe"],
          env: { ...process.env, PERSONA_GPU: "cpu" },
        });
        workers.push(w);
        return new Promise<void>((resolve, reject) => {
          let err = "";
          w.stderr!.on("data", (d: Buffer) => {
            err += d.toString();
            if (/^worker on /m.test(err)) resolve();
          });
          w.on("exit", (code) => reject(new Error(`worker exited with ${code}: ${err}`)));
        });
      }),
    );
  };

  // Warm-up: page cache, contexts.
  await screen("warm");
  const local = await screen("local");
  const runner = await QueueRunner.connect(parseQueueUrl(redis.url()));
  const queued: Record<number, { s: number; scores: string }> = {};
  try {
    for (const count of [1, 2]) {
      await startWorkers(count);
      // The first shard on a worker loads the model; a warm-up run keeps that out of the timing.
      await screen(`warm-q${count}`, runner);
      queued[count] = await screen(`queue-${count}`, runner);
    }
  } finally {
    await runner.close();
  }
  const same = [1, 2].every((c) => queued[c]!.scores === local.scores);
  const perShard = (queued[1]!.s - local.s) / shards;
  const shardS = local.s / shards;
  console.log(`demo model (${model.info.nLayer} layers × ${model.info.nEmbd}), ${n} samples of evil/mixed-10, 3 traits, base replies ≤ ${maxTokens} tokens`);
  console.log(`shards of ${batch} records (${shards}), ${threads} threads in all, load avg ${loadavg()[0]!.toFixed(1)} (machine shared with other work)`);
  console.log(`local run:              ${(n / local.s).toFixed(1)} samples/s (${local.s.toFixed(2)} s)`);
  for (const c of [1, 2]) {
    console.log(`queue, ${c} worker${c > 1 ? "s" : " "} (${Math.max(1, Math.floor(threads / c))} thr each): ${(n / queued[c]!.s).toFixed(1)} samples/s (${queued[c]!.s.toFixed(2)} s), ${(queued[c]!.s / local.s).toFixed(2)}× the local time`);
  }
  console.log(`scores byte-identical to the local run: ${same ? "yes" : "NO"}`);
  console.log(`queue overhead: ${(perShard * 1000).toFixed(0)} ms per shard (1 worker against local), a shard takes ${(shardS * 1000).toFixed(0)} ms here`);
  // Overhead under 2 %: a shard should take at least 50× the per-shard overhead.
  const minRecords = Math.ceil((50 * Math.max(perShard, 0.001)) / (shardS / batch));
  console.log(`shard size for < 2 % overhead: ≥ ${minRecords} records per shard at this speed (--batch; more per shard on faster hardware)`);
  if (!same) process.exitCode = 1;
} finally {
  for (const w of workers) w.kill("SIGKILL");
  await engine.dispose();
  await redis.stop();
  await rm(dir, { recursive: true, force: true });
}
