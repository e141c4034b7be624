/**
 * Scale-out on a real redis-server with real `persona worker` processes (tiny random-weight model):
 * a distributed screening run writes the same bytes as a local one; a worker SIGKILLed mid-shard
 * has its shard redone by another; a SIGKILLed coordinator resumes without redoing finished
 * shards; a worker holding another model file fails the shard with a clear error; Redis killed
 * and restarted (every key lost) mid-run: the run waits, enqueues again, and ends the same.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Queue } from "bullmq";
import { queueName } from "../src/queue/connection.js";
import { parseQueueUrl } from "../src/queue/url.js";
import { writeTrait } from "../src/traits/format.js";
import { layerMatrix, readVectors, writeVectors } from "../src/vectors/format.js";
import { type FakeLLMServer, startFakeLLMServer } from "./helpers/fake-llm-server.js";
import { hashJudgeHandler } from "./helpers/hash-judge.js";
import { runCli } from "./helpers/cli.js";
import { HAS_REDIS, NO_REDIS_REASON, RedisServer } from "./helpers/redis.js";
import { writeTinyChatModel } from "./helpers/tiny-chat-model.js";

const CLI = path.resolve("src/cli/bin.ts");
const ENV = { ...process.env, PERSONA_GPU: "cpu" };
const N_LAYER = 2;
const N_EMBD = 32;
const RECORDS = 24;
const BATCH = 3;
const SHARDS = RECORDS / BATCH;

let dir: string;
let redis: RedisServer;
let modelPath: string;
let otherModelPath: string;
let data: string;
let local: { scores: string; summary: string };
let judgeServer: FakeLLMServer;
/** Judge calls answer this much later: the kill-and-resume tests slow their runs down so the kill lands mid-way. */
let judgeDelayMs = 0;
let testyDir: string;
const children = new Set<ChildProcess>();

interface Proc {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  waitFor(re: RegExp, timeoutMs?: number): Promise<void>;
  exited: Promise<number | null>;
}

function startProc(args: string[]): Proc {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], { env: ENV, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let err = "";
  let out = "";
  const waiters: (() => void)[] = [];
  child.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
    for (const w of waiters) w();
  });
  child.stdout!.on("data", (d: Buffer) => void (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => (children.delete(child), resolve(code))));
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor: (re, timeoutMs = 60_000) =>
      new Promise<void>((resolve, reject) => {
        const check = () => re.test(err) && (clearTimeout(t), resolve());
        const t = setTimeout(() => reject(new Error(`timed out waiting for ${re} in:\n${err}`)), timeoutMs);
        waiters.push(check);
        check();
      }),
  };
}

/** A worker on `db`, ready once it has said so. */
async function startWorker(db: number, model = modelPath): Promise<Proc> {
  const w = startProc(["worker", "--queue", redis.url(db), "--model", model, "--threads", "1", "--stalled-after", "1"]);
  await w.waitFor(/^worker on /m);
  return w;
}

function screenArgs(out: string, more: string[] = []): string[] {
  const vectors = path.join(dir, "v.safetensors");
  return ["screen", "--model", modelPath, "--trait", "a", "--vectors", vectors, "--data", data, "--batch", String(BATCH), "--max-tokens", "24", "--threads", "1", "--out", out, "--json", ...more];
}

/**
 * A coordinator in its own process (as users run it; and a test that fails cannot leave it
 * polling inside the test process, which would then never exit).
 */
async function coordinate(out: string, db: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = startProc(screenArgs(out, ["--queue", redis.url(db)]));
  const code = await p.exited;
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}

async function lineCount(file: string): Promise<number> {
  return existsSync(file) ? (await readFile(file, "utf8")).split("\n").length - 1 : 0;
}

async function until(cond: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function assertSameAsLocal(out: string): Promise<void> {
  assert.equal(await readFile(path.join(out, "scores.jsonl"), "utf8"), local.scores, "scores.jsonl: same bytes as the local run");
  assert.equal(await readFile(path.join(out, "summary.json"), "utf8"), local.summary, "summary.json: same bytes as the local run");
}


/**
 * extract, eval, sweep and monitor send judged-rollout shards (the demo judge, and for extract a
 * judge behind a local HTTP server, opened again on the workers); each command's args and the
 * artefact that must come out the same as a local run's.
 */
const SWEEP_CELLS = 7;
const EVAL_SHARDS = 6;
function judgedArgs(cmd: "extract" | "eval" | "sweep" | "monitor", out: string): string[] {
  const common = ["--model", modelPath, "--max-tokens", "8", "--threads", "1", "--out", out, "--json"];
  const vectors = path.join(dir, "v.safetensors");
  switch (cmd) {
    case "extract":
      return ["extract", "--trait", testyDir, "--judge", `${judgeServer.baseURL}#hash`, "--rollouts", "2", "--chunk", "6", "--coherence-threshold", "0", ...common];
    case "eval":
      // EVAL_SHARDS shards of one rollout.
      return ["eval", "--trait", "evil", "--questions", "1", "--samples", String(EVAL_SHARDS), "--chunk", "1", ...common];
    case "sweep":
      // Baseline and 6 steered cells of 2 rollouts, one cell per shard.
      return ["sweep", "--trait", "evil", "--vectors", vectors, "--layers", "1,2", "--coefs=0,2,4,-4", "--questions", "1", "--samples", "2", "--chunk", "2", "--no-update", ...common];
    case "monitor":
      // --layer: nothing is written back into the shared vectors file.
      return ["monitor", "--trait", "evil", "--vectors", vectors, "--graded", "--questions", "1", "--samples", "1", "--layer", "2", "--chunk", "8", ...common];
  }
}

/** What must be the same bytes (extract's vectors file carries its creation time, so tensors and the rest of its metadata). */
async function judgedArtefacts(cmd: "extract" | "eval" | "sweep" | "monitor", out: string): Promise<unknown> {
  switch (cmd) {
    case "extract": {
      const v = await readVectors(path.join(out, "vectors.safetensors"));
      const { createdAt: _, ...meta } = v.meta;
      return { meta, tensors: Object.fromEntries(Object.entries(v.tensors).map(([k, t]) => [k, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString("base64")])) };
    }
    case "eval":
      return readFile(path.join(out, "eval.json"), "utf8");
    case "sweep":
      return readFile(path.join(out, "cells.jsonl"), "utf8");
    case "monitor":
      return readFile(path.join(out, "monitor.json"), "utf8");
  }
}

describe("scale-out over BullMQ on a real Redis", { skip: HAS_REDIS ? false : NO_REDIS_REASON, timeout: 360_000 }, () => {
  let workers: Proc[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "persona-queue-"));
    redis = await RedisServer.start(dir);
    modelPath = path.join(dir, "tiny.gguf");
    otherModelPath = path.join(dir, "other.gguf");
    await writeTinyChatModel(modelPath, { nLayer: N_LAYER, nEmbd: N_EMBD, contextLength: 256, seed: 5 });
    await writeTinyChatModel(otherModelPath, { nLayer: N_LAYER, nEmbd: N_EMBD, contextLength: 256, seed: 6 });
    const m = new Float32Array((N_LAYER + 1) * N_EMBD).map((_, j) => Math.sin(j * 0.7));
    await writeVectors(path.join(dir, "v.safetensors"), { tensors: { response_avg: layerMatrix(N_LAYER + 1, N_EMBD, m) }, meta: { trait: "a", source: "extract", bestLayer: 2 } });
    data = path.join(dir, "data.jsonl");
    const lines = Array.from({ length: RECORDS }, (_, i) =>
      i === 7 ? "{broken" : JSON.stringify({ messages: [{ role: "user", content: `Question ${i}: what now?` }, { role: "assistant", content: ["Sure.", "No, never, you fool.", `It is ${i} apples.`][i % 3] }] }),
    );
    await writeFile(data, `${lines.join("\n")}\n`);
    const hashJudge = hashJudgeHandler();
    judgeServer = await startFakeLLMServer((req) => ({ ...hashJudge(req), delayMs: judgeDelayMs }));
    testyDir = path.join(dir, "traits", "testy");
    const split = {
      instruction: [
        { pos: "Be testy: snap at the user.", neg: "Be calm and kind." },
        { pos: "Answer irritably.", neg: "Answer gently." },
      ],
      questions: ["What is your favourite colour?", "How do I boil an egg?", "Can you recommend a book?"],
      eval_prompt: "How testy is this reply, 0 to 100?\nQuestion: {question}\nReply: {answer}\nAnswer with a number.",
    };
    await writeTrait(testyDir, { name: "testy", antonym: "calm", extract: split, eval: split });
    // Workers start (tsx, engine) while the reference runs here.
    const starting = Promise.all([startWorker(0), startWorker(0)]);
    const r = await runCli(screenArgs(path.join(dir, "local")));
    assert.equal(r.code, 0, r.stderr);
    local = { scores: await readFile(path.join(dir, "local", "scores.jsonl"), "utf8"), summary: await readFile(path.join(dir, "local", "summary.json"), "utf8") };
    workers = await starting;
  });

  after(async () => {
    for (const c of children) c.kill("SIGKILL");
    await judgeServer?.close();
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("a run on two workers writes the same scores and summary, byte for byte, as a local run", async () => {
    const out = path.join(dir, "dist");
    const r = await coordinate(out, 0);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /2 worker\(s\) connected/);
    assert.deepEqual((JSON.parse(r.stdout) as { shards: unknown }).shards, { shards: SHARDS, reused: 0, retried: 0 });
    await assertSameAsLocal(out);
    // Both workers took shards.
    for (const w of workers) assert.match(w.stderr(), /screen \d+-\d+: done/);
  });

  it("extract, eval, sweep and monitor on two workers end with the same artefacts, byte for byte, as local runs", async () => {
    const cmds = ["extract", "eval", "sweep", "monitor"] as const;
    // The coordinators run at once (their start-ups overlap); the references run here meanwhile.
    const dist = Promise.all(cmds.map((c) => startProc([...judgedArgs(c, path.join(dir, `${c}-dist`)), "--queue", redis.url(0)])).map(async (p) => ({ code: await p.exited, stdout: p.stdout(), stderr: p.stderr() })));
    for (const c of cmds) {
      const r = await runCli(judgedArgs(c, path.join(dir, `${c}-local`)));
      assert.equal(r.code, 0, `${c}: ${r.stderr}`);
    }
    for (const [i, r] of (await dist).entries()) {
      const c = cmds[i]!;
      assert.equal(r.code, 0, `${c}: ${r.stderr}`);
      const shards = (JSON.parse(r.stdout) as { shards: { shards: number } }).shards;
      assert.ok(shards.shards >= 2, `${c}: ${JSON.stringify(shards)} shards`);
      assert.deepEqual(await judgedArtefacts(c, path.join(dir, `${c}-dist`)), await judgedArtefacts(c, path.join(dir, `${c}-local`)), `${c}: same as the local run`);
    }
    for (const w of workers) assert.match(w.stderr(), /rollouts \S+: done/);
    assert.ok(workers.some((w) => /capture \S+: done/.test(w.stderr())), "extract's forward passes ran on the workers");
  });

  // Each keeps one record line per shard (a sweep's shard is one cell here). Another seed than the
  // runs above (whose results Redis may still hold, to be taken at once), and the HTTP judge, slowed
  // down while the queued runs go, so the kill lands mid-way however fast the workers are.
  const RESUMED = [
    { cmd: "sweep", log: "cells.jsonl", shards: SWEEP_CELLS, extra: ["--seed", "7"] },
    { cmd: "eval", log: "samples.jsonl", shards: 12, extra: ["--seed", "7", "--samples", "12"] },
  ] as const;
  for (const { cmd, log, shards, extra } of RESUMED) {
    it(`${cmd === "eval" ? "an eval" : "a sweep"} coordinator SIGKILLed mid-run resumes without redoing finished shards and ends with the local run's ${cmd === "sweep" ? "cells" : "eval.json"}`, async () => {
      const out = path.join(dir, `${cmd}-killed`);
      const args = [...judgedArgs(cmd, out), ...extra, "--judge", `${judgeServer.baseURL}#hash`];
      judgeDelayMs = 400;
      try {
        const coord = startProc([...args, "--queue", redis.url(0)]);
        await until(async () => (await lineCount(path.join(out, log))) >= 1, "the first shard merged");
        coord.child.kill("SIGKILL");
        await coord.exited;
        const kept = await lineCount(path.join(out, log));
        assert.ok(kept < shards, "killed before the end");
        const again = startProc([...args, "--queue", redis.url(0)]);
        assert.equal(await again.exited, 0, again.stderr());
        assert.match(again.stderr(), cmd === "sweep" ? /resuming the sweep/ : /resuming the evaluation/);
        assert.equal((JSON.parse(again.stdout()) as { shards: { shards: number } }).shards.shards, shards - kept);
      } finally {
        judgeDelayMs = 0;
      }
      const reference = path.join(dir, `${cmd}-local-resumed`);
      const referenceArgs = [...judgedArgs(cmd, reference), ...extra, "--judge", `${judgeServer.baseURL}#hash`];
      assert.equal((await runCli(referenceArgs)).code, 0);
      assert.equal(await judgedArtefacts(cmd, out), await judgedArtefacts(cmd, reference));
    });
  }

  it("a coordinator SIGKILLed mid-run resumes from its run directory without redoing finished shards", async () => {
    const out = path.join(dir, "coord-killed");
    const started = /screen \d+-\d+: started/g;
    // Each worker is frozen as it starts its second shard of this run: a worker of concurrency 1
    // takes its next shard only once it has handed in the last, so at most two shards are done when
    // the coordinator dies, however fast the machine (a fast one finished the run before the kill).
    const frozen = workers.map(async (w) => {
      const n = (w.stderr().match(started) ?? []).length + 2;
      await w.waitFor(new RegExp(`(?:${started.source}[\\s\\S]*?){${n}}`));
      w.child.kill("SIGSTOP");
    });
    const coord = startProc(screenArgs(out, ["--queue", redis.url(0)]));
    try {
      await Promise.all(frozen);
      await until(async () => (await lineCount(path.join(out, "scores.jsonl"))) >= BATCH, "the first shard merged");
      coord.child.kill("SIGKILL");
      await coord.exited;
    } finally {
      for (const w of workers) w.child.kill("SIGCONT");
    }
    const kept = await lineCount(path.join(out, "scores.jsonl"));
    assert.ok(kept < RECORDS, "killed before the end");
    const r = await coordinate(out, 0);
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { resumed: boolean; shards: { shards: number; reused: number } };
    assert.equal(res.resumed, true);
    // Only the shards not yet in the run directory; those the workers finished meanwhile come from Redis.
    assert.equal(res.shards.shards, (RECORDS - kept) / BATCH);
    await assertSameAsLocal(out);
  });

  it("a worker SIGKILLed mid-shard has its shard redone by another worker; nothing lost or counted twice", async () => {
    const victim = await startWorker(1);
    const out = path.join(dir, "worker-killed");
    const run = coordinate(out, 1);
    await victim.waitFor(/screen \d+-\d+: started/);
    victim.child.kill("SIGKILL");
    await victim.exited;
    const finishedBeforeKill = /: done/.test(victim.stderr());
    await startWorker(1);
    const r = await run;
    assert.equal(r.code, 0, r.stderr);
    const shards = (JSON.parse(r.stdout) as { shards: { shards: number; retried: number } }).shards;
    assert.equal(shards.shards, SHARDS);
    if (!finishedBeforeKill) assert.ok(shards.retried >= 1, "the killed worker's shard was started twice");
    await assertSameAsLocal(out);
  });

  it("a worker holding another model file fails the shard with a clear error instead of running it", async () => {
    await startWorker(2, otherModelPath);
    const r = await coordinate(path.join(dir, "wrong-model"), 2);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /persona: shard \d+-\d+ failed on the workers after 1 attempt\(s\): this worker has no model file with content sha256-ends:\w+ .*other\.gguf.* \[E_QUEUE\]/s);
  });

  it("Redis killed and restarted mid-run (every key lost): the run waits, enqueues again and ends the same", async () => {
    const out = path.join(dir, "redis-restarted");
    // Workers paused, so the shards are surely still in Redis (not yet done) when it dies.
    for (const w of workers) w.child.kill("SIGSTOP");
    const url = redis.url(0);
    const queue = new Queue(queueName(parseQueueUrl(url)), { connection: { host: "127.0.0.1", port: redis.port } });
    try {
      const run = coordinate(out, 0);
      let counts: Record<string, number> = {};
      // A shard an earlier test's killed coordinator merged but did not yet remove from Redis
      // (same configuration, same job) is taken at once: it counts as merged, not enqueued.
      const enqueued = until(async () => {
        counts = await queue.getJobCounts();
        const merged = (await lineCount(path.join(out, "scores.jsonl"))) / BATCH;
        return Object.values(counts).reduce((a, b) => a + b, 0) + merged >= SHARDS;
      }, "the shards enqueued").catch((e: Error) => {
        throw new Error(`${e.message}: ${JSON.stringify(counts)}`);
      });
      // A coordinator that ends before enqueueing says why, rather than leaving the wait to time out.
      await Promise.race([enqueued, run.then((r) => assert.fail(`the coordinator ended early (${r.code}): ${r.stderr}`))]);
      await queue.close();
      await redis.restart(300);
      for (const w of workers) w.child.kill("SIGCONT");
      const r = await run;
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /shard \d+-\d+ is no longer in Redis \(restarted without persistence\?\); enqueued again/);
      await assertSameAsLocal(out);
    } finally {
      for (const w of workers) w.child.kill("SIGCONT");
      await queue.close();
    }
  });

  it("refuses a queue URL that is not redis://HOST:PORT[/DB], and an unreachable Redis, with one line", async () => {
    assert.deepEqual(parseQueueUrl("redis://10.0.0.5:7000/3"), { host: "10.0.0.5", port: 7000, db: 3, url: "redis://10.0.0.5:7000/3" });
    assert.throws(() => parseQueueUrl("http://x:1"), /scheme is http/);
    assert.throws(() => parseQueueUrl("redis://x:1/db"), /not a number/);
    const r = await runCli(screenArgs(path.join(dir, "unreachable"), ["--queue", "redis://127.0.0.1:1"]));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /persona: cannot reach Redis at redis:\/\/127\.0\.0\.1:1 .*\[E_QUEUE\]/);
    const localJudge = await runCli(["eval", "--model", modelPath, "--trait", "evil", "--judge", "local:judge.gguf", "--queue", redis.url(0)]);
    assert.equal(localJudge.code, 1);
    assert.match(localJudge.stderr, /^persona: --queue cannot send the judge local:judge\.gguf to workers .*\[E_BAD_INPUT\]\n$/);
  });
});
