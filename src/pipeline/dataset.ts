/**
 * Training datasets for screening, read as a stream: chat JSONL (`messages`, the last one the
 * assistant's reply) or JSONL/CSV with `prompt`/`response` (or the reference's `question`/`answer`)
 * columns. Records come out one at a time with their index and line number; a broken record is
 * an `error` record, never an exception, so one bad line cannot stop a long run.
 */
import { createReadStream } from "node:fs";
import { validateMessages } from "../engine/chat.js";
import type { ChatMessage } from "../engine/types.js";
import { PersonaError } from "../errors.js";
import { readInputLines } from "../store/jsonl.js";
import { CsvParser } from "./csv.js";

export interface TrainingSample {
  /** The conversation before the reply (a prompt/response row is one user message). */
  prompt: ChatMessage[];
  response: string;
}

export interface DatasetRecord {
  /** 0-based position among the file's records (blank lines and the CSV header do not count). */
  index: number;
  /** 1-based line the record starts on. */
  line: number;
  sample?: TrainingSample;
  /** Why the record cannot be used. */
  error?: string;
}

/** A broken record: caught by `record` and turned into its `error` text. */
const bad = (why: string) => new PersonaError("E_BAD_FORMAT", why);

const PAIRS = [
  ["prompt", "response"],
  ["question", "answer"],
] as const;

function fromFields(get: (key: string) => unknown, has: (key: string) => boolean): TrainingSample {
  const pair = PAIRS.find(([p, r]) => has(p) && has(r));
  if (!pair) throw bad("needs prompt and response (or question and answer) fields, or a messages list");
  const [p, r] = pair.map(get);
  if (typeof p !== "string" || typeof r !== "string") throw bad(`${pair[0]} and ${pair[1]} must be strings`);
  if (p.trim() === "") throw bad(`${pair[0]} is empty`);
  if (r.trim() === "") throw bad(`${pair[1]} is empty`);
  return { prompt: [{ role: "user", content: p }], response: r };
}

/** One JSONL line as a sample; throws a plain Error saying what is wrong. */
export function parseSampleLine(text: string): TrainingSample {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw bad("not valid JSON");
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw bad("not a JSON object");
  const o = v as Record<string, unknown>;
  if (!("messages" in o)) return fromFields((k) => o[k], (k) => k in o);
  const messages = o.messages;
  if (!Array.isArray(messages) || messages.length < 2) throw bad("messages must be a list of at least two messages");
  try {
    validateMessages(messages as ChatMessage[]);
  } catch (e) {
    throw bad(e instanceof Error ? e.message : String(e));
  }
  const last = messages[messages.length - 1] as ChatMessage;
  if (last.role !== "assistant") throw bad(`the last message must be the assistant's reply, not ${JSON.stringify(last.role)}`);
  if (last.content.trim() === "") throw bad("the assistant's reply is empty");
  return { prompt: (messages as ChatMessage[]).slice(0, -1).map((m) => ({ role: m.role, content: m.content })), response: last.content };
}

function record(index: number, line: number, parse: () => TrainingSample): DatasetRecord {
  try {
    return { index, line, sample: parse() };
  } catch (e) {
    return { index, line, error: e instanceof Error ? e.message : String(e) };
  }
}

async function* jsonlRecords(file: string): AsyncGenerator<DatasetRecord> {
  let index = 0;
  for await (const { line, text } of readInputLines(file)) yield record(index++, line, () => parseSampleLine(text));
}

async function* csvRecords(file: string): AsyncGenerator<DatasetRecord> {
  const parser = new CsvParser();
  let header: string[] | undefined;
  let index = 0;
  const take = function* (rows: ReturnType<CsvParser["push"]>): Generator<DatasetRecord> {
    for (const { fields, line } of rows) {
      if (fields.length === 1 && fields[0] === "") continue;
      if (!header) {
        header = fields.map((h) => h.trim());
        if (!PAIRS.some(([p, r]) => header!.includes(p) && header!.includes(r))) {
          throw new PersonaError("E_BAD_FORMAT", `${file}: the CSV header needs prompt and response (or question and answer) columns; it has ${header.join(", ")}`);
        }
        continue;
      }
      const h = header;
      yield record(index++, line, () => {
        if (fields.length !== h.length) throw bad(`has ${fields.length} fields, the header has ${h.length}`);
        return fromFields((k) => fields[h.indexOf(k)], (k) => h.includes(k));
      });
    }
  };
  let last = 1;
  for await (const chunk of createReadStream(file, { encoding: "utf8" })) {
    for (const r of take(parser.push(chunk as string))) {
      last = r.line;
      yield r;
    }
  }
  let tail: ReturnType<CsvParser["end"]>;
  try {
    tail = parser.end();
  } catch (e) {
    yield { index: index++, line: last, error: (e as Error).message };
    return;
  }
  yield* take(tail);
}

export type DatasetFormat = "jsonl" | "csv";

export function datasetFormat(file: string): DatasetFormat {
  return /\.csv$/i.test(file) ? "csv" : "jsonl";
}

/** Streams the records of `file` (`.csv` as CSV, anything else as JSONL). */
export function readDataset(file: string): AsyncGenerator<DatasetRecord> {
  return datasetFormat(file) === "csv" ? csvRecords(file) : jsonlRecords(file);
}
