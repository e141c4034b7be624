/**
 * The one append-only JSONL log behind run records, the judge cache and streamed scores: a line
 * is a record, and a record is durable once its append resolves (after an fsync every
 * `syncEvery` lines; always on `sync`/`close`). A last line without its newline is a write cut
 * short by a crash: opening cuts it, so nothing torn is read and the next append starts clean.
 */
import { createReadStream } from "node:fs";
import { open, truncate, type FileHandle } from "node:fs/promises";
import { createInterface } from "node:readline";
import { PersonaError } from "../errors.js";
import { Serial } from "./serial.js";

export interface JsonlLogOptions {
  /** fsync after this many appended lines. Defaults to 1 (every append). */
  syncEvery?: number;
}

export class JsonlLog {
  private readonly serial = new Serial();
  private unsynced = 0;

  private constructor(
    readonly file: string,
    private fh: FileHandle | undefined,
    private count: number,
    private readonly syncEvery: number,
  ) {}

  /** Opens (or creates) `file` for appending, after cutting a torn last line. */
  static async open(file: string, opts: JsonlLogOptions = {}): Promise<JsonlLog> {
    const { lines, complete, size } = await scan(file);
    if (complete < size) await truncate(file, complete);
    return new JsonlLog(file, await open(file, "a"), lines, opts.syncEvery ?? 1);
  }

  /** Complete lines in the file. */
  get lines(): number {
    return this.count;
  }

  /** Appends values, one JSON line each; appends run one after another, never interleaved. */
  append(values: readonly unknown[]): Promise<void> {
    return this.serial.run(async () => {
      if (!this.fh) throw new PersonaError("E_DISPOSED", `${this.file} is closed`);
      if (values.length === 0) return;
      await this.fh.appendFile(values.map((v) => `${JSON.stringify(v)}\n`).join(""));
      this.count += values.length;
      this.unsynced += values.length;
      if (this.unsynced >= this.syncEvery) await this.syncNow();
    });
  }

  /** Waits for pending appends and makes them durable. */
  sync(): Promise<void> {
    return this.serial.run(() => this.syncNow());
  }

  async close(): Promise<void> {
    await this.sync().catch(() => undefined);
    await this.serial.settled();
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }

  private async syncNow(): Promise<void> {
    if (!this.fh || this.unsynced === 0) return;
    this.unsynced = 0;
    await this.fh.datasync();
  }
}

/** Byte counts of a JSONL file: complete lines, the end of the last complete line, the size. */
async function scan(file: string): Promise<{ lines: number; complete: number; size: number }> {
  let lines = 0;
  let complete = 0;
  let size = 0;
  try {
    for await (const chunk of createReadStream(file)) {
      const buf = chunk as Buffer;
      for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, i + 1)) {
        lines++;
        complete = size + i + 1;
      }
      size += buf.length;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  return { lines, complete, size };
}

/**
 * Streams the complete, non-blank lines of a JSONL file with their 1-based line numbers, parsed
 * by `parse` (which may throw for a bad record); a missing file yields nothing. A torn last line
 * is not yielded.
 */
export async function* readJsonl<T>(file: string, parse: (value: unknown, line: number) => T): AsyncGenerator<T> {
  const { complete } = await scan(file);
  if (complete === 0) return;
  const lines = createInterface({ input: createReadStream(file, { encoding: "utf8", end: complete - 1 }), crlfDelay: Infinity });
  let n = 0;
  for await (const line of lines) {
    n++;
    if (line.trim() === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new PersonaError("E_BAD_FORMAT", `${file}:${n} is corrupt (not JSON); remove the line or the file`);
    }
    yield parse(value, n);
  }
}

/**
 * Streams the JSON values of a JSONL input file (one per non-blank line, the last line with or
 * without its newline), for files people write; a JSON error is thrown as the SyntaxError it is.
 * Logs this module writes are read with `readJsonl`, which never yields a torn last line.
 */
export async function* readJsonLines<T>(file: string): AsyncGenerator<T> {
  for await (const { text } of readInputLines(file)) yield JSON.parse(text) as T;
}

/**
 * The non-blank lines of a text file people write (datasets, prompts, pairs), with their 1-based
 * line numbers for error messages; the last line counts with or without its newline.
 */
export async function* readInputLines(file: string): AsyncGenerator<{ line: number; text: string }> {
  const lines = createInterface({ input: createReadStream(file, { encoding: "utf8" }), crlfDelay: Infinity });
  let line = 0;
  try {
    for await (const text of lines) {
      line++;
      if (text.trim() !== "") yield { line, text };
    }
  } finally {
    lines.close();
  }
}
