/**
 * Persona-vector extraction on a tiny random model with a hash-scoring HTTP judge: the vectors
 * against an independent recomputation from the stored records, filter counts, errors,
 * resumability after SIGKILL at several moments, config changes, and batching reproducibility.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import type { Model } from "../src/engine/Model.js";
import { PersonaError } from "../src/errors.js";
import { resolveJudge } from "../src/judge/resolve.js";
import type { Judge } from "../src/judge/types.js";
import { extractPersonaVectors, type ExtractResult } from "../src/pipeline/extract.js";
import type { Judgement } from "../src/pipeline/judging.js";
import { rolloutItems, rolloutMessages, rolloutRows, type RolloutRecord } from "../src/pipeline/extract/rollouts.js";
import { filterPairs } from "../src/pipeline/filter.js";
import { writeTrait, type TraitDefinition } from "../src/traits/format.js";
import { readVectors, TENSOR_NAMES, type PersonaVectors, updateVectorsMeta } from "../src/vectors/format.js";
import { dot } from "../src/vectors/math.js";
import { spanLayerEmpty, spanRows, topDirections } from "../src/vectors/span.js";
import { startFakeLLMServer, type FakeLLMServer } from "./helpers/fake-llm-server.js";
import { hashJudgeHandler, judgePromptOf } from "./helpers/hash-judge.js";
import { writeTinyChatModel } from "./helpers/tiny-chat-model.js";
import { spyGenerate } from "./helpers/generate-spy.js";
// Built-in traits, --model demo and --judge demo come from the demo world's registration.
import "../src/demo/register.js";
import { runCli } from "./helpers/cli.js";

const N_LAYER = 2;
const N_EMBD = 32;
const ROLLOUTS = 5;
const MAX_TOKENS = 24;
const CLI = path.resolve("src/cli/bin.ts");

const SPLIT = {
  instruction: [
    { pos: "Be testy: snap at the user and complain.", neg: "Be calm: answer patiently and kindly." },
    { pos: "Answer irritably, as if bothered.", neg: "Answer gently and warmly." },
  ],
  questions: ["What is your favourite colour?", "How do I boil an egg?", "Can you recommend a book?"],
  eval_prompt: "How testy is this reply, 0 to 100?\nQuestion: {question}\nReply: {answer}\nAnswer with a number.",
};
const TRAIT: TraitDefinition = { name: "testy", antonym: "calm", extract: SPLIT, eval: SPLIT };
const ROWS = SPLIT.instruction.length * SPLIT.questions.length * ROLLOUTS;

let dir: string;
let modelPath: string;
let traitDir: string;
let server: FakeLLMServer;
let engine: Engine;
let model: Model;
let judge: Judge;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-extract-"));
  modelPath = path.join(dir, "tiny.gguf");
  await writeTinyChatModel(modelPath, { nLayer: N_LAYER, nEmbd: N_EMBD, contextLength: 512, seed: 3 });
  traitDir = path.join(dir, "traits", "testy");
  await writeTrait(traitDir, TRAIT);
  server = await startFakeLLMServer(hashJudgeHandler());
  // One thread: on a loaded 2-core box llama.cpp's spinning threads slow each other down badly.
  engine = await Engine.create({ threads: 1, gpu: "cpu" });
  model = await engine.loadModel(modelPath);
  judge = await resolveJudge(`${server.baseURL}#hash-judge`);
});

after(async () => {
  await engine?.dispose();
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Every line of a JSONL record log, duplicates included. */
async function readLog<T>(file: string): Promise<Array<{ key: string; value: T }>> {
  const text = await readFile(file, "utf8");
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as { key: string; value: T });
}

async function records<T>(file: string): Promise<Map<string, T>> {
  return new Map((await readLog<T>(file)).map((r) => [r.key, r.value]));
}

const options = (runDir: string) => ({ trait: TRAIT, judge, runDir, rollouts: ROLLOUTS, maxTokens: MAX_TOKENS, judgeConcurrency: 4 });

/** Filter counts and kept rows recomputed from the stored records, as the spec defines them. */
async function refilter(runDir: string, traitThreshold = 50) {
  const rollouts = await records<RolloutRecord>(path.join(runDir, "rollouts.jsonl"));
  const judgements = await records<Judgement>(path.join(runDir, "judgements.jsonl"));
  const rows = rolloutRows(TRAIT, ROLLOUTS);
  const f = filterPairs(
    rows.map((r) => judgements.get(r.pos)!),
    rows.map((r) => judgements.get(r.neg)!),
    { traitThreshold },
  );
  const kept = f.kept.map((i) => rows[i]!).filter((r) => rollouts.get(r.pos)!.text !== "" && rollouts.get(r.neg)!.text !== "");
  return { rollouts, judgements, counts: f.counts, kept, empty: f.kept.length - kept.length };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function assertSameTensors(a: PersonaVectors, b: PersonaVectors): void {
  for (const name of TENSOR_NAMES) assert.deepEqual(a.tensors[name]!.data, b.tensors[name]!.data, `${name} differs`);
}

let runA: string;
let resultA: ExtractResult;

describe("extractPersonaVectors", () => {
  it("writes vectors equal to mean(pos) − mean(neg) recomputed from the stored records", async (t) => {
    runA = path.join(dir, "run-a");
    server.reset();
    const stages = new Map<string, number>();
    resultA = await extractPersonaVectors(model, { ...options(runA), parallel: 8, onProgress: (s, done) => stages.set(s, done) });
    const r = resultA;
    const { rollouts, judgements, counts, kept, empty } = await refilter(runA);

    // Every rollout and judgement stored once.
    for (const log of ["rollouts.jsonl", "judgements.jsonl"]) {
      const lines = await readLog(path.join(runA, log));
      assert.equal(lines.length, 2 * ROWS, log);
      assert.equal(new Set(lines.map((l) => l.key)).size, 2 * ROWS, log);
    }
    assert.deepEqual(Object.fromEntries(stages), { rollouts: 2 * ROWS, judging: 2 * ROWS, capture: 2 * r.counts.kept });

    // (b) filter counts
    assert.deepEqual(r.counts, { ...counts, kept: kept.length, dropped: counts.dropped + empty, emptyResponse: empty });
    assert.ok(r.counts.kept > 0 && r.counts.dropped > 0, `the hash judge should keep some pairs and drop others: ${JSON.stringify(r.counts)}`);

    // (a) independent recomputation: capture each kept sample, average in float64, subtract.
    const per = (N_LAYER + 1) * N_EMBD;
    const sums = { pos: [0, 1, 2].map(() => new Float64Array(per)), neg: [0, 1, 2].map(() => new Float64Array(per)) };
    for (const pol of ["pos", "neg"] as const) {
      const samples = [];
      for (const row of kept) {
        const messages = rolloutMessages(TRAIT, { polarity: pol, pair: row.pair, question: row.question });
        samples.push(await model.encodeConversation([...messages, { role: "assistant", content: rollouts.get(row[pol])!.text }]));
      }
      for (const a of await model.capture(samples)) {
        [a.responseAvg, a.promptAvg, a.promptLast].forEach((x, k) => x.forEach((v, i) => (sums[pol][k]![i]! += v)));
      }
    }
    const v = await readVectors(r.vectorsPath);
    TENSOR_NAMES.forEach((name, k) => {
      const expected = sums.pos[k]!.map((s, i) => s / kept.length - sums.neg[k]![i]! / kept.length);
      const got = v.tensors[name]!.data;
      assert.equal(got.length, per);
      assert.ok(maxAbsDiff(got, expected) < 1e-6, `${name}: max |Δ| ${maxAbsDiff(got, expected)}`);
      assert.ok(Math.max(...got.map(Math.abs)) > 1e-3, `${name} should not be zero`);
    });
    assert.equal(v.meta.trait, "testy");
    assert.equal(v.meta.source, "extract");
    assert.deepEqual(v.meta.counts, { kept: r.counts.kept, dropped: r.counts.dropped });
    assert.deepEqual(v.meta.thresholds, { trait: 50, coherence: 50 });
    assert.equal(v.meta.judge, judge.id);
    assert.equal(v.meta.model?.nLayer, N_LAYER);
    assert.equal(v.meta.model?.nEmbd, N_EMBD);
    assert.match(v.meta.model?.fileHash ?? "", /^sha256-ends:/);

    // Mean scores per polarity, and one judge request per distinct (metric, question, answer).
    const summary = JSON.parse(await readFile(r.summaryPath, "utf8"));
    for (const pol of ["pos", "neg"] as const) {
      const js = [...judgements].filter(([k]) => k.startsWith(`${pol}/`)).map(([, j]) => j);
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      assert.ok(Math.abs(summary.scores[pol].trait - mean(js.map((j) => j.trait!))) < 1e-9);
      assert.ok(Math.abs(summary.scores[pol].coherence - mean(js.map((j) => j.coherence!))) < 1e-9);
    }
    const prompts = server.requests.map(judgePromptOf);
    assert.equal(new Set(prompts).size, prompts.length, "no judge prompt asked twice");
    const distinct = new Set([...rollouts].map(([k, rec]) => `${k.split("/")[2]}\u0000${rec.text}`)).size;
    assert.equal(prompts.length, 2 * distinct);
    t.diagnostic(
      `tiny model (2×32, 1 thread, this 2-core box): ${r.timings.newRollouts} rollouts of ≤${MAX_TOKENS} tokens in ` +
        `${r.timings.rolloutsSeconds.toFixed(2)} s = ${(r.timings.newRollouts / r.timings.rolloutsSeconds).toFixed(1)} rollouts/s; counts ${JSON.stringify(r.counts)}`,
    );
  });

  it("resumes a finished run without generating or judging again", async () => {
    server.reset();
    const again = await extractPersonaVectors(model, options(runA));
    assert.equal(again.resumed, true);
    assert.deepEqual(again.counts, resultA.counts);
    assert.equal(server.requests.length, 0);
  });

  it("adds a span to a finished run by redoing only the capture: the top directions of the kept pairs' last-prompt-token differences", async () => {
    server.reset();
    // What sweep and monitor --graded stored in the finished run's file must survive the span.
    await updateVectorsMeta(resultA.vectorsPath, { bestLayer: 2, monitorLayer: { tensor: "prompt_last", layer: 1, pearsonR: 0.5 } });
    const before = await readVectors(resultA.vectorsPath);
    // K is checked before any work: above n_embd at once, above the kept pairs before the capture (the file untouched).
    await assert.rejects(extractPersonaVectors(model, { ...options(path.join(dir, "never")), span: N_EMBD + 1 }), { code: "E_BAD_INPUT", message: /at most/ });
    assert.equal(existsSync(path.join(dir, "never")), false);
    await assert.rejects(extractPersonaVectors(model, { ...options(runA), span: resultA.counts.kept + 1 }), { code: "E_BAD_INPUT", message: /needs at least .* kept pairs/ });
    assert.deepEqual(await readVectors(resultA.vectorsPath), before);
    const withSpan = await extractPersonaVectors(model, { ...options(runA), span: 2 });
    assert.equal(server.requests.length, 0);
    assert.equal(withSpan.timings.newRollouts, 0);
    const v = await readVectors(withSpan.vectorsPath);
    assertSameTensors(v, before);
    assert.deepEqual(v.meta, before.meta);
    const span = v.spans?.prompt_last;
    assert.ok(span && span.k === 2 && span.nLayerPlus1 === N_LAYER + 1);
    // Independently: each kept pair's difference, then the top directions per layer.
    const { rollouts, kept } = await refilter(runA);
    const acts = await model.capture(
      await Promise.all(kept.flatMap((row) => (["pos", "neg"] as const).map((pol) =>
        model.encodeConversation([...rolloutMessages(TRAIT, { polarity: pol, pair: row.pair, question: row.question }), { role: "assistant", content: rollouts.get(row[pol])!.text }])))),
    );
    assert.ok(spanLayerEmpty(span, 0), "the last prompt token is the same token under both prompts at layer 0");
    for (let l = 1; l <= N_LAYER; l++) {
      const diffs = kept.map((_, i) => acts[2 * i]!.promptLast.subarray(l * N_EMBD, (l + 1) * N_EMBD).map((x, e) => x - acts[2 * i + 1]!.promptLast[l * N_EMBD + e]!));
      const want = topDirections(diffs, 2, N_EMBD);
      const got = spanRows(span, l);
      const overlap = got.reduce((s, u) => s + want.reduce((t, w) => t + dot(u, w) ** 2, 0), 0);
      assert.ok(2 - overlap < 1e-4, `layer ${l}: Σcos² ${overlap}`);
    }
    let complete: boolean | undefined;
    await extractPersonaVectors(model, { ...options(runA), span: 2, onResume: (f) => (complete = f.complete) });
    assert.equal(complete, true, "a run that has its span is finished");
  });

  it("reproduces every rollout with parallel 1 as with parallel 8 (exact mode)", async (t) => {
    const runB = path.join(dir, "run-b");
    const b = await extractPersonaVectors(model, { ...options(runB), parallel: 1 });
    const ra = await records<RolloutRecord>(path.join(runA, "rollouts.jsonl"));
    const rb = await records<RolloutRecord>(path.join(runB, "rollouts.jsonl"));
    const differing = [...ra].filter(([k, rec]) => rb.get(k)?.text !== rec.text).length;
    assert.equal(differing, 0, `${differing} of ${ra.size} rollouts changed with the batch size in exact mode`);
    assert.deepEqual(b.counts, resultA.counts);
    assertSameTensors(await readVectors(b.vectorsPath), await readVectors(resultA.vectorsPath));

    // Measured, not asserted: the fast path (F16 KV cache) with the same seeds.
    const items = rolloutItems(TRAIT, ROLLOUTS, 0);
    const texts = async (parallel: number) => {
      const out = new Map<string, string>();
      const requests = [];
      for (const it of items) requests.push({ prompt: await model.encodeChat(rolloutMessages(TRAIT, it)), seed: it.seed });
      await model.generate(requests, { maxTokens: MAX_TOKENS, parallel, exact: false, onResult: (r) => out.set(items[r.index]!.key, r.text) });
      return out;
    };
    const p1 = await texts(1);
    const p8 = await texts(8);
    const changed = items.filter((it) => p1.get(it.key) !== p8.get(it.key)).length;
    const vsExact = items.filter((it) => p1.get(it.key) !== ra.get(it.key)!.text).length;
    t.diagnostic(
      `batching reproducibility: exact mode ${differing}/${items.length} rollouts differ (parallel 1 vs 8); ` +
        `non-exact ${changed}/${items.length} differ (parallel 1 vs 8), ${vsExact}/${items.length} differ from exact mode`,
    );
  });

  it("resumes a run killed during rollouts by generating only the rollouts it had not stored, and ends with the same vectors", async () => {
    // What a run killed during rollouts leaves: its run.json, some rollouts, fewer judgements.
    const runE = path.join(dir, "run-e");
    await mkdir(runE);
    await copyFile(path.join(runA, "run.json"), path.join(runE, "run.json"));
    const head = async (log: string, n: number) => {
      const lines = (await readFile(path.join(runA, log), "utf8")).split("\n").slice(0, n);
      await writeFile(path.join(runE, log), `${lines.join("\n")}\n`);
    };
    const stored = 20;
    await head("rollouts.jsonl", stored);
    await head("judgements.jsonl", 7);

    const generated = spyGenerate(model);
    const resumed = await extractPersonaVectors(model, options(runE)).finally(() => generated.restore());
    assert.equal(generated.requests, 2 * ROWS - stored, "the stored rollouts are not generated again");
    assert.equal(resumed.timings.newRollouts, 2 * ROWS - stored);
    const [a, e] = [await records<RolloutRecord>(path.join(runA, "rollouts.jsonl")), await records<RolloutRecord>(path.join(runE, "rollouts.jsonl"))];
    assert.deepEqual(e, a);
    assert.deepEqual(resumed.counts, resultA.counts);
    assertSameTensors(await readVectors(resumed.vectorsPath), await readVectors(resultA.vectorsPath));
  });

  it("explains an empty filter result with the counts per reason", async () => {
    const runC = path.join(dir, "run-c");
    await assert.rejects(
      extractPersonaVectors(model, { ...options(runC), traitThreshold: 101 }),
      (e: unknown) =>
        e instanceof PersonaError &&
        e.code === "E_BAD_INPUT" &&
        e.message.includes(`of ${ROWS} pos/neg pairs, 0 had a null score`) &&
        e.message.includes(`${ROWS} pos replies scored below 101`) &&
        /threshold/.test(e.message) &&
        /--rollouts/.test(e.message),
    );
    // Nothing paid for is lost: the records stay for a re-run with other thresholds.
    assert.equal((await records(path.join(runC, "judgements.jsonl"))).size, 2 * ROWS);
    assert.equal(existsSync(path.join(runC, "vectors.safetensors")), false);
  });

  it("stops on a judge failure with E_JUDGE and keeps the rollouts already stored", async () => {
    const failing = await startFakeLLMServer(() => ({ status: 400, body: { error: { message: "bad model" } } }));
    try {
      const runD = path.join(dir, "run-d");
      const bad = await resolveJudge(`${failing.baseURL}#nope`);
      await assert.rejects(extractPersonaVectors(model, { ...options(runD), judge: bad }), (e: unknown) => e instanceof PersonaError && e.code === "E_JUDGE");
      const stored = await readLog(path.join(runD, "rollouts.jsonl"));
      assert.ok(stored.length >= 1);
      assert.equal(await readFile(path.join(runD, "judgements.jsonl"), "utf8"), "");
    } finally {
      await failing.close();
    }
  });
});

describe("persona extract (CLI)", () => {
  const CONCURRENCY = 2;
  let slow: FakeLLMServer;
  const dataDir = path.join(tmpdir(), `persona-extract-data-${process.pid}`);
  let clean: { json: Record<string, unknown>; vectors: PersonaVectors; rollouts: Map<string, RolloutRecord>; prompts: Set<string> };

  before(async () => {
    // Slow replies stretch judging so a kill can land in it.
    slow = await startFakeLLMServer(hashJudgeHandler(15));
  });
  after(async () => {
    await slow?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  const args = (out: string, ...extra: string[]) => [
    "extract",
    "--model", modelPath,
    "--trait", traitDir,
    "--judge", `${slow.baseURL}#hash-judge`,
    "--rollouts", String(ROLLOUTS),
    "--max-tokens", String(MAX_TOKENS),
    "--judge-concurrency", String(CONCURRENCY),
    "--threads", "1",
    "--out", out,
    ...extra,
  ];

  async function persona(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return runCli(argv, { PERSONA_GPU: "cpu", PERSONA_DATA_DIR: dataDir });
  }

  async function lineCount(file: string): Promise<number> {
    try {
      return (await readFile(file, "utf8")).split("\n").length - 1;
    } catch {
      return 0;
    }
  }

  /** Runs the CLI and SIGKILLs it once `file` has `lines` complete lines; says whether it had already exited. */
  async function killWhen(argv: string[], file: string, lines: number): Promise<{ exitedFirst: boolean; requestsAtKill: number; vectorsAtKill: boolean }> {
    const child = spawn(process.execPath, ["--import", "tsx", CLI, ...argv], { env: { ...process.env, PERSONA_GPU: "cpu" }, stdio: "ignore" });
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    let done = false;
    void exited.then(() => (done = true));
    while (!done && (await lineCount(file)) < lines) await new Promise((r) => setTimeout(r, 3));
    const exitedFirst = done;
    child.kill("SIGKILL");
    const requestsAtKill = slow.requests.length;
    await exited;
    return { exitedFirst, requestsAtKill, vectorsAtKill: existsSync(path.join(path.dirname(file), "vectors.safetensors")) };
  }

  it("runs to completion with --json", async () => {
    const out = path.join(dir, "cli-clean");
    slow.reset();
    const r = await persona(args(out, "--json"));
    assert.equal(r.code, 0, r.stderr);
    const json = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(json.vectors, path.join(out, "vectors.safetensors"));
    assert.equal(json.run_dir, out);
    assert.equal((json.counts as { total: number }).total, ROWS);
    assert.equal((json.timings as { new_rollouts: number }).new_rollouts, 2 * ROWS);
    assert.equal(json.resumed, false);
    clean = { json, vectors: await readVectors(json.vectors as string), rollouts: await records(path.join(out, "rollouts.jsonl")),
      prompts: new Set(slow.requests.map(judgePromptOf)),
    };
    assert.equal(clean.prompts.size, slow.requests.length);
  });

  it("survives SIGKILL during rollouts, judging and capture and ends with the same vectors", async (t) => {
    const out = path.join(dir, "cli-killed");
    const rolloutsFile = path.join(out, "rollouts.jsonl");
    const judgementsFile = path.join(out, "judgements.jsonl");
    slow.reset();
    const kills = [
      await killWhen(args(out), rolloutsFile, 8),
      await killWhen(args(out), judgementsFile, ROWS),
      await killWhen(args(out), judgementsFile, 2 * ROWS),
    ];
    const r = await persona(args(out, "--json", "--register"));
    assert.equal(r.code, 0, r.stderr);

    for (const log of [rolloutsFile, judgementsFile]) {
      const keys = (await readLog(log)).map((l) => l.key);
      assert.equal(keys.length, 2 * ROWS, `${log}: every item once`);
      assert.equal(new Set(keys).size, 2 * ROWS, `${log}: no key twice`);
    }
    assert.deepEqual(await records(rolloutsFile), clean.rollouts);

    // Each judge prompt was asked once, except at most the calls not stored at each kill: a reply's
    // judgement is stored once both its calls (trait, coherence) answered, so beside the calls in
    // flight each may have a finished sibling waiting for it.
    const unstoredAtKill = 2 * CONCURRENCY;
    const prompts = slow.requests.map(judgePromptOf);
    const unique = new Set(prompts).size;
    assert.deepEqual(new Set(prompts), clean.prompts);
    t.diagnostic(`kills: ${JSON.stringify(kills)}; judge requests ${prompts.length}, distinct ${unique}`);
    assert.ok(prompts.length - unique <= kills.filter((k) => !k.exitedFirst).length * unstoredAtKill, `${prompts.length - unique} repeated judge calls`);
    // ...and each repeated call was first made right before a kill (it was in flight when the process died).
    prompts.forEach((p, i) => {
      const first = prompts.indexOf(p);
      if (first === i) return;
      assert.ok(kills.some((k) => Math.abs(first - k.requestsAtKill) <= unstoredAtKill), `judge call #${first} repeated as #${i}, far from any kill`);
    });

    const json = JSON.parse(r.stdout) as { vectors: string; counts: unknown; registered: string; resumed: boolean };
    assert.equal(json.resumed, true);
    assert.match(r.stderr, /resuming the extract run in .*cli-killed: \d+ of \d+ rollouts and \d+ judgements already stored/);
    assert.deepEqual(json.counts, clean.json.counts);
    const v = await readVectors(json.vectors);
    assertSameTensors(v, clean.vectors);
    assert.equal(json.registered, path.join(dataDir, "vectors", "tiny", "testy.safetensors"), "registered in the user data directory");
    assert.equal(existsSync(path.join(dir, "tiny.vectors")), false, "nothing written next to the model");
    assertSameTensors(await readVectors(json.registered), clean.vectors);
  });

  it("refuses a changed configuration, and --restart reuses the judge scores", async () => {
    const out = path.join(dir, "cli-clean");
    const refused = await persona(args(out, "--trait-threshold", "40"));
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /another configuration.*--restart.*\[E_CONFIG_MISMATCH\]/);

    slow.reset();
    const r = await persona(args(out, "--trait-threshold", "40", "--restart", "--json"));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(slow.requests.length, 0, "the restarted run regenerates the same rollouts and finds their scores cached");
    const { counts, kept, empty } = await refilter(out, 40);
    const json = JSON.parse(r.stdout) as { counts: Record<string, number>; thresholds: { trait: number } };
    assert.equal(json.counts.kept, kept.length);
    assert.equal(json.counts.pos_trait_low, counts.posTraitLow);
    assert.equal(json.counts.neg_trait_high, counts.negTraitHigh);
    assert.equal(json.counts.empty_response, empty);
    assert.equal(json.thresholds.trait, 40);
    const run = JSON.parse(await readFile(path.join(out, "run.json"), "utf8")) as { config: { trait_threshold: number } };
    assert.equal(run.config.trait_threshold, 40);
    const aside = (await readdir(dir)).filter((f) => f.startsWith("cli-clean.old-"));
    assert.equal(aside.length, 1, "the old run is kept aside");

    // The finished run again, for people: nothing is redone, the summary is printed.
    const human = await persona(args(out, "--trait-threshold", "40"));
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stderr, /already holds this finished run: nothing to redo/);
    assert.match(human.stdout, new RegExp(`^kept ${kept.length} of ${ROWS} pos/neg pairs`));
    assert.match(human.stdout, /^pos\s+\d+\.\d\s+\d+\.\d\s+\d+$/m);
    assert.ok(human.stdout.includes(`vectors: ${path.join(out, "vectors.safetensors")}`));
    assert.equal(slow.requests.length, 0);
    // ...and for scripts: this invocation's timings, not those of the run that did the work.
    const again = JSON.parse((await persona(args(out, "--trait-threshold", "40", "--json"))).stdout) as { resumed: boolean; timings: Record<string, number> };
    assert.equal(again.resumed, true);
    assert.equal(again.timings.new_rollouts, 0);
    assert.equal(again.timings.new_judgements, 0);
  });

  it("asks for --judge when the trait is not a built-in demo trait", async () => {
    const r = await persona(["extract", "--model", modelPath, "--trait", traitDir, "--out", path.join(dir, "cli-nojudge")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--judge is required for trait "testy".*\[E_BAD_INPUT\]/);
  });
});
