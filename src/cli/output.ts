/**
 * How commands print: plain text to stdout, stable JSON for scripts, aligned tables for people.
 * Everything goes through one sink, so the CLI can run in-process with its output captured.
 */
import type { ScoreStats } from "../pipeline/evaluate.js";

export interface CliIO {
  out(text: string): void;
  err(text: string): void;
}

export const STDIO: CliIO = {
  out: (t) => void process.stdout.write(t),
  err: (t) => void process.stderr.write(t),
};

let io: CliIO = STDIO;

/** Runs `fn` with output going to `sink` (main's caller chooses; tests capture). */
export async function withIO<T>(sink: CliIO, fn: () => Promise<T>): Promise<T> {
  const prev = io;
  io = sink;
  try {
    return await fn();
  } finally {
    io = prev;
  }
}

/** Raw text to stdout, for streamed replies. */
export function write(text: string): void {
  io.out(text);
}

export function print(text: string): void {
  io.out(text.endsWith("\n") ? text : `${text}\n`);
}

export function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

/**
 * Columns under a header row: values right-aligned; the first column left-aligned as a label,
 * unless `firstColumn` says it holds numbers too (`"right"`).
 */
export function table(header: readonly string[], rows: readonly (readonly string[])[], firstColumn: "left" | "right" = "left"): string {
  const widths = header.map((h, i) => rows.reduce((w, r) => Math.max(w, (r[i] ?? "").length), h.length));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (i === 0 && firstColumn === "left" ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(header), ...rows.map(line)].join("\n");
}

/** Progress and notes go to stderr so stdout stays clean for pipes and --json. */
export function note(text: string): void {
  io.err(text.endsWith("\n") ? text : `${text}\n`);
}

/** A score summary as one cell: mean ± std (n, nulls). */
export function formatStats(s: ScoreStats): string {
  if (s.mean === null) return `– (no scores, ${s.nulls} null)`;
  return `${s.mean.toFixed(1)} ± ${(s.std ?? 0).toFixed(1)}  (n=${s.n}${s.nulls ? `, ${s.nulls} null` : ""})`;
}
