/**
 * Data screening on a tiny random-weight chat model: ΔP against the engine's own projections,
 * a dataset scored whole equals its halves scored apart, a SIGKILLed run resumes without losing
 * or repeating a record, broken records are reported by line and skipped (or refused), and a file
 * of tens of thousands of lines streams through in bounded memory.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile, appendFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import type { Model } from "../src/engine/Model.js";
import { CsvParser, parseCsv } from "../src/pipeline/csv.js";
import { readDataset } from "../src/pipeline/dataset.js";
import { rocAuc, screenDataset, type ScoreLine, type ScreenTrait } from "../src/pipeline/screen.js";
import { layerMatrix, writeVectors } from "../src/vectors/format.js";
import { writeTinyChatModel } from "./helpers/tiny-chat-model.js";

const N_LAYER = 3;
const N_EMBD = 32;
const CLI = path.resolve("src/cli/bin.ts");

let dir: string;
let engine: Engine;
let model: Model;
let modelPath: string;
let vectorsPath: string;
let traits: ScreenTrait[];

function vector(seed: number): Float32Array {
  return Float32Array.from({ length: N_EMBD }, (_, j) => Math.sin(j * 0.7 + seed));
}

function chatLine(i: number): string {
  const reply = ["Sure, here it is.", "No. Never do that again, you fool.", `The answer is ${i} apples and a pear.`][i % 3]!;
  return JSON.stringify({ messages: [{ role: "user", content: `Question number ${i}: what now?` }, { role: "assistant", content: reply }] });
}

async function readScores(file: string): Promise<ScoreLine[]> {
  return (await readFile(file, "utf8")).trim().split("\n").map((l) => JSON.parse(l) as ScoreLine);
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-screen-"));
  modelPath = path.join(dir, "tiny.gguf");
  await writeTinyChatModel(modelPath, { nLayer: N_LAYER, nEmbd: N_EMBD, contextLength: 256, seed: 5 });
  engine = await Engine.create({ gpu: "cpu", threads: 2 });
  model = await engine.loadModel(modelPath);
  traits = [
    { name: "a", layer: 2, vector: vector(1) },
    { name: "b", layer: 3, vector: vector(2) },
  ];
  vectorsPath = path.join(dir, "a.safetensors");
  const data = new Float32Array((N_LAYER + 1) * N_EMBD);
  for (let l = 0; l <= N_LAYER; l++) data.set(vector(l), l * N_EMBD);
  await writeVectors(vectorsPath, { tensors: { response_avg: layerMatrix(N_LAYER + 1, N_EMBD, data) }, meta: { trait: "a", source: "extract", bestLayer: 2 } });
});

after(async () => {
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe("screening", () => {
  it("ΔP is the sample's response projection minus the base reply's, for every trait in one pass", async () => {
    const data = path.join(dir, "small.jsonl");
    await writeFile(data, `${Array.from({ length: 4 }, (_, i) => chatLine(i)).join("\n")}\n`);
    const labels = path.join(dir, "small.labels.jsonl");
    await writeFile(labels, [0, 1, 2, 3].map((index) => JSON.stringify({ index, trait_eliciting: index % 2 === 1 })).join("\n"));
    const r = await screenDataset(model, { data, traits, runDir: path.join(dir, "run-small"), maxTokens: 12, top: 2, labels });
    const lines = await readScores(r.scoresPath);
    assert.deepEqual(lines.map((l) => l.index), [0, 1, 2, 3]);
    const probes = model.probes(traits.map((t) => ({ layer: t.layer, vector: t.vector })));
    for (const l of lines) {
      const rec = JSON.parse(chatLine(l.index)) as { messages: { role: string; content: string }[] };
      const sample = await model.encodeConversation(rec.messages);
      const [p] = await model.project([sample], probes);
      traits.forEach((t, k) => {
        const s = l.scores![t.name]!;
        assert.ok(Math.abs(s.projection - p!.responseAvg[k]!) < 1e-5, "projection");
        // The base reply's projection comes from its generation (the engine test checks it equals teacher forcing).
        assert.equal(typeof l.base_reply, "string");
        if (s.base_projection === null) return assert.equal(s.delta_p, null);
        assert.equal(s.delta_p, s.projection - s.base_projection);
      });
    }
    const flagged = r.summary.traits.a!.flagged;
    assert.equal(flagged.length, 2);
    assert.ok(flagged[0]!.delta_p! >= flagged[1]!.delta_p!);
    const mean = lines.reduce((acc, l) => acc + l.scores!.a!.delta_p!, 0) / lines.length;
    assert.ok(Math.abs(r.summary.traits.a!.dataset_mean_delta_p! - mean) < 1e-9);
    const marked = lines.map((l) => l.index % 2 === 1);
    assert.deepEqual(r.summary.traits.b!.roc_auc, {
      delta_p: rocAuc(lines.map((l) => l.scores!.b!.delta_p!), marked),
      projection: rocAuc(lines.map((l) => l.scores!.b!.projection), marked),
    });
    assert.ok((await readFile(r.reportPath, "utf8")).includes("<svg"));
  });

  it("scores a dataset exactly as it scores its two halves (order and values)", async () => {
    const all = Array.from({ length: 9 }, (_, i) => chatLine(i));
    const files = { whole: all, first: all.slice(0, 5), second: all.slice(5) };
    const out: Record<string, ScoreLine[]> = {};
    for (const [name, lines] of Object.entries(files)) {
      const data = path.join(dir, `${name}.jsonl`);
      await writeFile(data, `${lines.join("\n")}\n`);
      // Different chunking too: the whole in chunks of 4, the halves in chunks of 3.
      const r = await screenDataset(model, { data, traits, runDir: path.join(dir, `run-${name}`), maxTokens: 6, chunkSize: name === "whole" ? 4 : 3 });
      out[name] = await readScores(r.scoresPath);
    }
    const joined = [...out.first!, ...out.second!.map((l) => ({ ...l, index: l.index + 5, line: l.line + 5 }))];
    assert.equal(out.whole!.length, joined.length);
    out.whole!.forEach((w, i) => {
      const h = joined[i]!;
      assert.equal(w.index, h.index);
      assert.equal(w.base_reply, h.base_reply);
      for (const t of traits) {
        for (const key of ["projection", "base_projection", "delta_p"] as const) {
          assert.ok(Math.abs(w.scores![t.name]![key]! - h.scores![t.name]![key]!) < 1e-5, `${i} ${t.name} ${key}`);
        }
      }
    });
  });

  it("reports broken records by line, skips them, and refuses them with strict", async () => {
    const data = path.join(dir, "broken.jsonl");
    const text = [
      chatLine(0),
      "{not json",
      "",
      JSON.stringify({ messages: [{ role: "user", content: "hi" }] }),
      JSON.stringify({ prompt: "What is two and two?", response: "Four, of course." }),
      JSON.stringify({ question: "Capital of nowhere?", answer: "" }),
      JSON.stringify({ messages: [{ role: "assistant", content: "x" }, { role: "user", content: "y" }] }),
      JSON.stringify({ something: 1 }),
      chatLine(1),
    ].join("\n");
    await writeFile(data, text);
    const bad: number[] = [];
    const r = await screenDataset(model, { data, traits, runDir: path.join(dir, "run-broken"), cheap: true, onBadRecord: (b) => bad.push(b.line) });
    assert.deepEqual(bad, [2, 4, 6, 7, 8]);
    const lines = await readScores(r.scoresPath);
    assert.deepEqual(lines.map((l) => [l.index, l.line, l.scores ? "ok" : "bad"]), [
      [0, 1, "ok"], [1, 2, "bad"], [2, 4, "bad"], [3, 5, "ok"], [4, 6, "bad"], [5, 7, "bad"], [6, 8, "bad"], [7, 9, "ok"],
    ]);
    assert.match(lines[1]!.error!, /JSON/);
    assert.equal(r.summary.n, 3);
    assert.equal(r.summary.skipped, 5);
    assert.equal(r.summary.traits.a!.dataset_mean_delta_p, null);
    await assert.rejects(
      screenDataset(model, { data, traits, runDir: path.join(dir, "run-strict"), cheap: true, strict: true }),
      (e: Error & { code?: string }) => e.code === "E_BAD_INPUT" && /line 2: not valid JSON/.test(e.message) && /line 8:/.test(e.message),
    );
    assert.equal(existsSync(path.join(dir, "run-strict", "scores.jsonl")), false);
  });

  it("reads prompt/response and question/answer CSV like the same chat JSONL", async () => {
    const pairs = [["What is a cat?", "A small animal, \"furry\", and proud."], ["Line\nbreak?", "Yes, two\r\nlines."]];
    const csv = path.join(dir, "qa.csv");
    const quote = (s: string) => `"${s.replace(/"/g, '""')}"`;
    await writeFile(csv, `\ufeffid,question,answer\r\n${pairs.map(([q, a], i) => `${i},${quote(q!)},${quote(a!)}`).join("\r\n")}\r\n`);
    const jsonl = path.join(dir, "qa.jsonl");
    await writeFile(jsonl, pairs.map(([q, a]) => JSON.stringify({ messages: [{ role: "user", content: q }, { role: "assistant", content: a }] })).join("\n"));
    const a = await screenDataset(model, { data: csv, traits, runDir: path.join(dir, "run-csv"), cheap: true });
    const b = await screenDataset(model, { data: jsonl, traits, runDir: path.join(dir, "run-csv-jsonl"), cheap: true });
    const [la, lb] = [await readScores(a.scoresPath), await readScores(b.scoresPath)];
    assert.deepEqual(la.map((l) => l.line), [2, 3]);
    assert.deepEqual(la.map((l) => l.scores), lb.map((l) => l.scores));
    // The incremental parser gives the same rows whatever the chunking.
    const text = await readFile(csv, "utf8");
    const p = new CsvParser();
    const rows = [...text].flatMap((c) => p.push(c)).concat(p.end()).map((r) => r.fields);
    assert.deepEqual(rows, parseCsv(text));
  });

  it("resumes a SIGKILLed run without losing or repeating a record", async () => {
    const data = path.join(dir, "kill.jsonl");
    await writeFile(data, `${Array.from({ length: 160 }, (_, i) => chatLine(i)).join("\n")}\n`);
    const args = ["--import", "tsx", CLI, "screen", "--model", modelPath, "--trait", "a", "--vectors", vectorsPath, "--data", data, "--cheap", "--batch", "4", "--threads", "2"];
    const killedDir = path.join(dir, "run-killed");
    const child = spawn(process.execPath, [...args, "--out", killedDir], { stdio: "ignore", env: { ...process.env, PERSONA_GPU: "cpu" } });
    const scores = path.join(killedDir, "scores.jsonl");
    const exited = new Promise((resolve) => child.on("exit", resolve));
    for (;;) {
      const n = existsSync(scores) ? (await readFile(scores, "utf8")).split("\n").length - 1 : 0;
      if (n >= 8) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill("SIGKILL");
    await exited;
    const before = (await readFile(scores, "utf8")).split("\n").length - 1;
    assert.ok(before < 160, "killed before the end");
    // A write torn by the kill: half a line at the end.
    await appendFile(scores, '{"index":');
    const resume = spawn(process.execPath, [...args, "--out", killedDir, "--json"], { env: { ...process.env, PERSONA_GPU: "cpu" } });
    let stdout = "";
    resume.stdout.on("data", (d) => (stdout += d));
    assert.equal(await new Promise((r) => resume.on("exit", r)), 0);
    const summary = JSON.parse(stdout);
    assert.equal(summary.resumed, true);
    assert.equal(summary.n, 160);
    const lines = await readScores(scores);
    assert.deepEqual(lines.map((l) => l.index), Array.from({ length: 160 }, (_, i) => i));
    // The same values as a run never interrupted (chunks differ after the resume point).
    const clean = await screenDataset(model, { data, traits: [{ ...traits[0]!, vector: vector(2) }], runDir: path.join(dir, "run-clean"), cheap: true, chunkSize: 4 });
    const ref = await readScores(clean.scoresPath);
    lines.forEach((l, i) => assert.ok(Math.abs(l.scores!.a!.projection - ref[i]!.scores!.a!.projection) < 1e-5, `record ${i}`));
    assert.deepEqual(Object.keys(summary.traits), ["a"]);
    assert.equal(summary.traits.a.flagged.length, 20);
  });

  it("streams a file of tens of thousands of lines in bounded memory", async () => {
    const data = path.join(dir, "big.jsonl");
    // 24k records, each dragging 2 KB of ignored payload: 48 MB, which a reader holding the file would show.
    const pad = "x".repeat(2048);
    const chunk = Array.from({ length: 1000 }, (_, i) => JSON.stringify({ prompt: `q${i % 7}`, response: `a${i % 5}`, payload: pad })).join("\n");
    await writeFile(data, "");
    for (let k = 0; k < 24; k++) await appendFile(data, `${chunk}\n`);
    let count = 0;
    const heap: number[] = [];
    for await (const rec of readDataset(data)) {
      assert.ok(rec.sample);
      if (++count % 2000 === 0) heap.push(process.memoryUsage().heapUsed);
    }
    assert.equal(count, 24_000);
    const growth = Math.max(...heap) - heap[0]!;
    assert.ok(growth < 32 * 2 ** 20, `heap grew ${(growth / 2 ** 20).toFixed(1)} MB while reading a 48 MB file`);
    // The pipeline itself on the first 600 records of it: more than a batch, appended as they finish.
    const head = path.join(dir, "big-head.jsonl");
    await writeFile(head, `${chunk.split("\n").slice(0, 600).join("\n")}\n`);
    const seen: number[] = [];
    const r = await screenDataset(model, { data: head, traits, runDir: path.join(dir, "run-big"), cheap: true, chunkSize: 256, onProgress: (p) => seen.push(p.done) });
    assert.equal(r.summary.n, 600);
    assert.deepEqual(seen, [256, 512, 600]);
  });
});

describe("rocAuc", () => {
  it("is 1 for a perfect ranking, 0.5 for ties and null without both classes", () => {
    assert.equal(rocAuc([0.1, 0.2, 0.9, 0.8], [false, false, true, true]), 1);
    assert.equal(rocAuc([1, 1, 1, 1], [false, true, false, true]), 0.5);
    assert.equal(rocAuc([0.3, 0.1, 0.2], [true, false, false]), 1);
    assert.equal(rocAuc([1, 2], [true, true]), null);
  });
});
