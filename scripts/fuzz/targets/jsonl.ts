/**
 * Line-oriented inputs: `persona activations --input pairs.jsonl` (parsed, templated, tokenized
 * and captured on the tiny model), the run directory's logs a resumed run reads back
 * (rollouts.jsonl / judgements.jsonl through RecordLog, judge-cache.jsonl through CachedJudge,
 * run.json through RunDir), and the reference's rollout CSVs. Edits: JSON structure, torn and
 * blank lines, CRLF, BOM, invalid UTF-8, huge lines, unbalanced CSV quotes.
 */
import { readFile } from "node:fs/promises";
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { CachedJudge } from "../../../src/judge/cache.js";
import type { Judge } from "../../../src/judge/types.js";
import { captureActivationsToFile, countCaptureInputs, readCaptureInputs } from "../../../src/pipeline/activations.js";
import { parseCsvRecords } from "../../../src/pipeline/csv.js";
import { RecordLog, RunDir, hashOf } from "../../../src/pipeline/rundir.js";
import { applySome, jsonValue, sometimesDamaged, mutateJson, nastyString } from "../mutate.js";
import type { FuzzCase, RunEnv, Target } from "../target.js";
import { type GgufSpec, tinyModelSpec, writeSpec } from "./gguf.js";

type Kind = "pairs" | "records" | "judge-cache" | "run.json" | "csv";
const KINDS: Kind[] = ["pairs", "pairs", "pairs", "records", "judge-cache", "run.json", "csv"];

function seedLines(rng: Rng, kind: Kind): unknown[] {
  switch (kind) {
    case "pairs":
      return [
        { prompt: "Hello", response: " there" },
        { messages: [{ role: "system", content: "Be kind." }, { role: "user", content: "hi" }, { role: "assistant", content: "hello!" }] },
        { prompt: nastyString(rng), response: nastyString(rng) },
      ];
    case "records":
      return [{ key: "pos/0/0/0", value: { text: "hi", tokens: [1, 2], finish: "stop" } }, { key: "neg/0/0/0", value: { trait: 10, coherence: 90 } }];
    case "judge-cache":
      return [{ key: "demo|trait|abc", score: 50 }, { key: "demo|coherence|def", score: null }];
    case "run.json":
      return [{ kind: "extract", config: RUN_CONFIG, config_hash: hashOf(RUN_CONFIG), resumed_at: ["2026-01-02"], tool_version: "persona-vectors@0.1.0", node_version: "v20", created_at: "2026-01-01" }];
    default:
      return [];
  }
}

function csvText(rng: Rng): string {
  const rows = [["question", "answer", "evil", "coherence"], ["What?", 'He said "hi", then\nleft', "80", "90"], ["x", "y", "", "1e3"]];
  let text = rows.map((r) => r.map((c) => (/[",\n]/.test(c) ? `"${c.replaceAll('"', '""')}"` : c)).join(",")).join(rng.pick(["\n", "\r\n"]));
  text += rng.pick(["", "\n", '\n"unterminated', "\n,,,", "\na,b", "\n\ufeff", `\n${nastyString(rng)}`]);
  return text;
}

/** Cuts every string in a document to `max` characters (pairs are decoded: a 70,000-token sample is slow, not broken). */
export function capStrings(v: unknown, max: number, depth = 0): unknown {
  if (typeof v === "string") return v.slice(0, max);
  if (depth > 32 || typeof v !== "object" || v === null) return v;
  if (Array.isArray(v)) return v.map((x) => capStrings(x, max, depth + 1));
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, capStrings(x, max, depth + 1)]));
}

export function jsonlText(rng: Rng, lines: unknown[], maxString = Infinity): { text: string; what: string } {
  const docs = structuredClone(lines);
  const what = applySome(rng, 3, [
    () => {
      const i = rng.int(docs.length);
      const r = mutateJson(rng, docs[i]);
      docs[i] = r.doc;
      return `line ${i + 1}: ${r.what}`;
    },
    () => {
      docs.push(jsonValue(rng));
      return "extra line of another shape";
    },
    () => {
      docs.length = rng.int(docs.length + 1);
      return `${docs.length} lines`;
    },
  ]);
  let text = docs.map((d) => JSON.stringify(capStrings(d, maxString)) ?? "undefined").join(rng.pick(["\n", "\r\n", "\n\n"])) + rng.pick(["\n", "", "\n{\"key\":", "\n   \n"]);
  if (rng.chance(0.1)) text = `\ufeff${text}`;
  return { text, what };
}

const RUN_CONFIG = { trait: "evil", rollouts: 1 };
const nullJudge: Judge = { id: "fuzz", score: async () => null };

export const jsonlTarget: Target<GgufSpec> = {
  name: "jsonl",
  description: "JSONL/CSV inputs: activations pairs.jsonl, run-directory logs (records, judge cache, run.json), rollout CSVs",
  setup: tinyModelSpec,
  async make(rng, model): Promise<FuzzCase> {
    const kind = rng.pick(KINDS);
    const name = { pairs: "pairs.jsonl", records: "run/rollouts.jsonl", "judge-cache": "run/judge-cache.jsonl", "run.json": "run/run.json", csv: "rollouts.csv" }[kind];
    const built = kind === "csv" ? { text: csvText(rng), what: "csv" } : jsonlText(rng, seedLines(rng, kind), kind === "pairs" ? 4096 : Infinity);
    const notes = [kind, built.what];
    const data = sometimesDamaged(rng, built.text, notes);
    const files: Record<string, Uint8Array | string> = { [name]: data };
    if (kind === "pairs") files["model.gguf"] = await writeSpec(model);
    const commands = kind === "pairs" ? [["activations", "--model", "model.gguf", "--input", name, "--out", "acts.safetensors"]] : [];
    return { files, commands, note: notes.join("; "), input: kind };
  },
  async run(c, env: RunEnv) {
    const note = c.input as Kind;
    if (note === "pairs") return capturePairs(env, "pairs.jsonl");
    if (note === "records") {
      const log = await RecordLog.open<unknown>("run/rollouts.jsonl");
      await log.close();
    } else if (note === "judge-cache") {
      const judge = await CachedJudge.open(nullJudge, "run/judge-cache.jsonl");
      await judge.score({ question: "q", answer: "a", metric: { kind: "coherence" } });
      await judge.dispose();
    } else if (note === "run.json") {
      await RunDir.open("run", "extract", RUN_CONFIG);
    } else {
      parseCsvRecords(await readFile("rollouts.csv", "utf8"));
    }
  },
};

/** `persona activations`: count and validate the lines, then template, tokenize and capture them into a file. */
async function capturePairs(env: RunEnv, file: string): Promise<void> {
  const count = await countCaptureInputs(file);
  const engine = await env.engine();
  const model = await engine.loadModel("model.gguf");
  try {
    await captureActivationsToFile(model, readCaptureInputs(file), "acts.safetensors", { count });
  } finally {
    await model.dispose();
  }
}
