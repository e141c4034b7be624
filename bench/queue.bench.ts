/**
 * Screening through the queue against the plain local run, from one run on the demo model: the
 * same dataset scored in this process, then through a real redis-server by 1 and by 2
 * `persona worker` processes (the coordinator is this process); checks the three runs wrote the
 * same scores, and reports the queue's overhead per shard and the shard size it suggests.
 *   node --import tsx bench/queue.bench.ts [--samples 48] [--batch 8] [--max-tokens 32] [--threads 2] [--rounds 3]
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
    rounds: { type: "string", default: "3" },
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
const rounds = Number(values.rounds);
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
  let run = 0;
  const screen = async (runner?: ShardRunner) => {
    const t0 = performance.now();
    const r = await screenDataset(model, { data: file!.path, traits, runDir: path.join(dir, `run-${run++}`), maxTokens, chunkSize: batch, runner });
    return { s: (performance.now() - t0) / 1000, scores: await readFile(r.scoresPath, "utf8") };
  };
  /** A worker on `db`, ready (model fingerprinted, engine up) before anything is timed. */
  const startWorker = (db: number, workerThreads: number) => {
    const w = spawn(process.execPath, ["--import", "tsx", "src/cli/bin.ts", "worker", "--queue", redis.url(db), "--model", DEMO_MODEL_PATH, "--threads", String(workerThreads)], {
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
  };
  // One worker with all the threads on database 1, two splitting them on database 2: the three
  // set-ups alternate round by round, so a shared machine's changing load hits them alike.
  const half = Math.max(1, Math.floor(threads / 2));
  await Promise.all([startWorker(1, threads), startWorker(2, half), startWorker(2, half)]);
  const one = await QueueRunner.connect(parseQueueUrl(redis.url(1)));
  const two = await QueueRunner.connect(parseQueueUrl(redis.url(2)));
  const times: Record<"local" | "one" | "two", number[]> = { local: [], one: [], two: [] };
  let same = true;
  try {
    // Warm-up: page cache, contexts, each worker's first model load.
    const reference = (await screen()).scores;
    await screen(one);
    await screen(two);
    for (let i = 0; i < rounds; i++) {
      for (const [name, runner] of [["local", undefined], ["one", one], ["two", two]] as const) {
        const r = await screen(runner);
        times[name].push(r.s);
        same &&= r.scores === reference;
      }
    }
  } finally {
    await Promise.all([one.close(), two.close()]);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const [local, q1, q2] = [median(times.local), median(times.one), median(times.two)];
  const perShard = (q1 - local) / shards;
  const shardS = local / shards;
  console.log(`demo model (${model.info.nLayer} layers × ${model.info.nEmbd}), ${n} samples of evil/mixed-10, 3 traits, base replies ≤ ${maxTokens} tokens`);
  console.log(`shards of ${batch} records (${shards}), ${threads} threads in all, medians of ${rounds} alternating rounds, load avg ${loadavg()[0]!.toFixed(1)} (shared machine)`);
  console.log(`local run:                     ${(n / local).toFixed(1)} samples/s (${local.toFixed(2)} s; all rounds ${times.local.map((t) => t.toFixed(2)).join(", ")})`);
  console.log(`queue, 1 worker  (${threads} threads):    ${(n / q1).toFixed(1)} samples/s (${q1.toFixed(2)} s, ${(q1 / local).toFixed(2)}× local; ${times.one.map((t) => t.toFixed(2)).join(", ")})`);
  console.log(`queue, 2 workers (${half} thread each): ${(n / q2).toFixed(1)} samples/s (${q2.toFixed(2)} s, ${(q2 / local).toFixed(2)}× local; ${times.two.map((t) => t.toFixed(2)).join(", ")})`);
  console.log(`scores byte-identical to the local run in every round: ${same ? "yes" : "NO"}`);
  // The quietest round of each set-up too: on a shared machine the medians can differ by more than the queue costs.
  const best = (Math.min(...times.one) - Math.min(...times.local)) / shards;
  console.log(`queue overhead per shard (1 worker against local): ${(perShard * 1000).toFixed(0)} ms from the medians, ${(best * 1000).toFixed(0)} ms from the quietest rounds; a shard takes ${(shardS * 1000).toFixed(0)} ms locally`);
  const overhead = Math.max(perShard, best);
  if (overhead <= 0) {
    console.log("the queue was not measurably slower than the local run here; keep shards well above Redis's few round trips (seconds of work each)");
  } else {
    // Overhead under 2 %: a shard should take at least 50× the per-shard overhead.
    console.log(`shard size for < 2 % overhead at this speed: ≥ ${Math.ceil((50 * overhead) / (shardS / batch))} records per shard (--batch)`);
  }
  if (!same) process.exitCode = 1;
} finally {
  for (const w of workers) w.kill("SIGKILL");
  await engine.dispose();
  await redis.stop();
  await rm(dir, { recursive: true, force: true });
}
