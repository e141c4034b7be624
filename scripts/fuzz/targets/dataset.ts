/**
 * Training datasets, as `persona screen --cheap` and `persona finetune` read them: chat JSONL
 * (`messages` ending with the assistant's reply), prompt/response or question/answer JSONL, and
 * CSV with those columns. Each case is read through the real pipeline on the tiny model: screening
 * (records parsed, templated, tokenized, captured and projected, scores.jsonl and the summary
 * written) or finetuning (every record checked, templated, packed and a LoRA trained for one
 * epoch). Half the screening cases also pass `--labels` JSONL (`{"index", "trait_eliciting"}` per
 * line) with the same edits. Edits: JSON structure, roles and contents, torn and blank lines, CRLF,
 * BOM, invalid UTF-8; CSV headers, quoting, field counts.
 */
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { finetune } from "../../../src/pipeline/finetune.js";
import { screenDataset } from "../../../src/pipeline/screen.js";
import { row } from "../../../src/vectors/format.js";
import { loadVectorSource } from "../../../src/vectors/steer.js";
import { applySome, interestingNumber, sometimesDamaged, nastyString } from "../mutate.js";
import type { FuzzCase, RunEnv, Target } from "../target.js";
import { sharedTinyModel } from "./gguf.js";
import { jsonlText } from "./jsonl.js";
import { tinyModelWithVectors } from "./vectors.js";

type Kind = "chat" | "pairs" | "qa" | "csv";

interface DatasetCase {
  kind: Kind;
  file: string;
  finetune: boolean;
  labels: boolean;
}

function seedLines(rng: Rng, kind: Exclude<Kind, "csv">): unknown[] {
  if (kind === "chat") {
    return [
      { messages: [{ role: "system", content: "Be kind." }, { role: "user", content: "hi" }, { role: "assistant", content: "hello!" }] },
      { messages: [{ role: "user", content: "2+2?" }, { role: "assistant", content: "4" }, { role: "user", content: "and 3+3?" }, { role: "assistant", content: "6" }] },
      { messages: [{ role: "user", content: nastyString(rng) }, { role: "assistant", content: nastyString(rng) }] },
    ];
  }
  const [p, r] = kind === "pairs" ? ["prompt", "response"] : ["question", "answer"];
  return [{ [p]: "Hello", [r]: " there" }, { [p]: "What is 2+2?", [r]: "4" }, { [p]: nastyString(rng), [r]: nastyString(rng) }];
}

const quote = (c: string) => (/[",\n\r]/.test(c) ? `"${c.replaceAll('"', '""')}"` : c);

function csvText(rng: Rng): { text: string; what: string } {
  const header = rng.pick([["prompt", "response"], ["question", "answer"], ["question", "answer", "evil"], ["response", "prompt"], ["prompt"], ["prompt", "prompt", "response"], [" prompt ", "response"], []]);
  const cell = () => nastyString(rng).slice(0, 2048);
  const rows: string[][] = [header, ["Hello", " there"], ["What?", 'He said "hi", then\nleft'], [cell(), cell()]];
  const what = applySome(rng, 3, [
    () => {
      if (rows.length < 2) rows.push([]);
      const row = rng.pick(rows.slice(1));
      row.length = rng.int(row.length + 2);
      for (let i = 0; i < row.length; i++) row[i] ??= cell();
      return `a row of ${row.length} fields`;
    },
    () => {
      rows.splice(1 + rng.int(rows.length - 1), 0, Array.from({ length: header.length }, () => rng.pick(["", " ", cell()])));
      return "a row of odd cells";
    },
    () => {
      rows.length = 1 + rng.int(rows.length);
      return `${rows.length - 1} rows`;
    },
  ]);
  let text = rows.map((r) => r.map(quote).join(",")).join(rng.pick(["\n", "\r\n"]));
  text += rng.pick(["", "\n", '\n"unterminated', "\n,,,", "\na,b", "\n\ufeff", `\n${nastyString(rng).slice(0, 300)}`, "\r", '\n"a""b",c']);
  if (rng.chance(0.1)) text = `\ufeff${text}`;
  return { text, what: `csv header ${JSON.stringify(header)}; ${what}` };
}

interface DatasetSeed {
  model: Uint8Array;
  vectors: Uint8Array;
}

export const datasetTarget: Target<DatasetSeed> = {
  name: "dataset",
  description: "training datasets (chat JSONL, prompt/response and question/answer JSONL, CSV) through screen --cheap (with --labels JSONL) and finetune --lora-rank on the tiny model",
  setup: tinyModelWithVectors,
  async make(rng, seed): Promise<FuzzCase> {
    const kind = rng.pick<Kind>(["chat", "chat", "pairs", "qa", "csv", "csv"]);
    const file = kind === "csv" ? "data.csv" : "data.jsonl";
    // Strings are capped: a sample is templated and run through the model, and 70,000 tokens are slow, not broken.
    const built = kind === "csv" ? csvText(rng) : jsonlText(rng, seedLines(rng, kind), 2048);
    const notes = [kind, built.what];
    const data = sometimesDamaged(rng, built.text, notes);
    const ft = rng.chance(0.15);
    const input: DatasetCase = { kind, file, finetune: ft, labels: !ft && rng.chance(0.5) };
    const files: FuzzCase["files"] = { [file]: data, "model.gguf": seed.model, "v.safetensors": seed.vectors };
    if (input.labels) {
      const odd = () => rng.pick<unknown>([interestingNumber(rng), nastyString(rng), null, 1.5, -1, "true", 0]);
      const labels = jsonlText(rng, [{ index: 0, trait_eliciting: true }, { index: 1, trait_eliciting: false }, { index: rng.chance(0.7) ? 2 : odd(), trait_eliciting: rng.chance(0.7) ? true : odd() }]);
      notes.push(`labels: ${labels.what}`);
      files["labels.jsonl"] = sometimesDamaged(rng, labels.text, notes);
    }
    const commands = input.finetune
      ? [["finetune", "--model", "model.gguf", "--data", file, "--out", "lora.gguf", "--lora-rank", "2"]]
      : [["screen", "--model", "model.gguf", "--trait", "evil", "--vectors", "v.safetensors", "--layer", "1", "--cheap", "--data", file, "--out", "run", ...(input.labels ? ["--labels", "labels.jsonl"] : [])]];
    return { files, commands, note: notes.join("; "), input };
  },
  async run(c, env: RunEnv) {
    const input = c.input as DatasetCase;
    const model = await sharedTinyModel(env);
    if (input.finetune) {
      await finetune({ model, data: input.file, out: "lora.gguf", lora: { rank: 2 }, epochs: 1 });
    } else {
      const v = await loadVectorSource("v.safetensors", model.info);
      const vector = Float32Array.from(row(v.matrix, 1));
      await screenDataset(model, { data: input.file, traits: [{ name: "evil", layer: 1, vector, source: v.path }], runDir: "run", cheap: true, chunkSize: 2, ...(input.labels ? { labels: "labels.jsonl" } : {}) });
    }
  },
};
