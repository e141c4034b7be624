/**
 * Thread counts and the CPU threadpool: more threads than cores made every decode wait on descheduled spinning peers
 * (`--threads 64` on 2 cores ran for minutes), so the engine lowers such a count to the core count
 * with a warning, and the clamped engine decodes what an engine asked for the core count decodes.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine, defaultThreads } from "../src/engine/Engine.js";
import { writeTinyChatModel } from "./helpers/tiny-chat-model.js";
import { runCli } from "./helpers/cli.js";

const cores = availableParallelism();
let dir: string;
let modelPath: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-threads-"));
  modelPath = path.join(dir, "tiny.gguf");
  await writeTinyChatModel(modelPath, { nLayer: 2, nEmbd: 32, contextLength: 128, seed: 5 });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function greedy(engine: Engine): Promise<number[]> {
  const model = await engine.loadModel(modelPath);
  const [r] = await model.generate([{ prompt: await model.tokenize("Hello") }], { temperature: 0, maxTokens: 8 });
  return [...r!.tokens];
}

describe("thread counts", () => {
  it("a count above the cores is lowered to the core count with a warning, and decodes as that count does", async () => {
    const warnings: string[] = [];
    await using clamped = await Engine.create({ gpu: "cpu", threads: cores + 62, onWarning: (m) => warnings.push(m) });
    assert.equal(clamped.threads, cores);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, new RegExp(`${cores + 62} threads requested but this machine has ${cores} cores; using ${cores}`));
    await using plain = await Engine.create({ gpu: "cpu", threads: cores, onWarning: (m) => warnings.push(m) });
    assert.equal(plain.threads, cores);
    assert.equal(warnings.length, 1, "no warning at the core count");
    assert.deepEqual(await greedy(clamped), await greedy(plain));
  });

  it("PERSONA_THREADS is clamped the same way; counts below 1 or beyond GGML_MAX_N_THREADS are refused", async () => {
    const saved = process.env.PERSONA_THREADS;
    process.env.PERSONA_THREADS = String(cores + 1);
    try {
      const warnings: string[] = [];
      await using engine = await Engine.create({ gpu: "cpu", onWarning: (m) => warnings.push(m) });
      assert.equal(engine.threads, cores);
      assert.equal(warnings.length, 1);
    } finally {
      if (saved === undefined) delete process.env.PERSONA_THREADS;
      else process.env.PERSONA_THREADS = saved;
    }
    await assert.rejects(Engine.create({ gpu: "cpu", threads: 0 }), /threads must be an integer in 1\.\.512/);
    await assert.rejects(Engine.create({ gpu: "cpu", threads: 513 }), /threads must be an integer in 1\.\.512/);
  });

  it("persona generate --threads 64 warns on stderr and still generates", async () => {
    const { code, stdout, stderr } = await runCli(["generate", "--model", modelPath, "--prompt", "Hi", "--max-tokens", "4", "--temperature", "0", "--json", "--threads", String(cores + 62)]);
    assert.equal(code, 0, stderr);
    assert.match(stderr, new RegExp(`persona: warning: ${cores + 62} threads requested but this machine has ${cores} cores; using ${cores}`));
    assert.ok(JSON.parse(stdout).samples[0].tokens.length > 0);
  });
});

describe("default thread count and polling", () => {
  it("uses the cores other work leaves free, at least one and at most all", () => {
    assert.equal(defaultThreads(2, 0), 2);
    assert.equal(defaultThreads(2, 0.4), 2);
    assert.equal(defaultThreads(2, 0.6), 1);
    assert.equal(defaultThreads(2, 9.2), 1);
    assert.equal(defaultThreads(8, 3.4), 5);
    assert.equal(defaultThreads(1, 0), 1);
  });

  it("a polling level outside 0..100 is refused before it reaches ggml; a valid one decodes as the default does", async () => {
    await assert.rejects(Engine.create({ gpu: "cpu", threads: 1, poll: 101 }), /poll must be an integer in 0\.\.100/);
    await assert.rejects(Engine.create({ gpu: "cpu", threads: 1, poll: -1 }), /poll must be an integer in 0\.\.100/);
    await using spinning = await Engine.create({ gpu: "cpu", threads: cores, poll: 100 });
    await using sleeping = await Engine.create({ gpu: "cpu", threads: cores });
    assert.deepEqual(await greedy(spinning), await greedy(sleeping));
  });
});
