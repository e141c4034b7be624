/**
 * Run directories (spec §3): `run.json` (kind, config, its hash, model fingerprint, versions),
 * append-only JSONL record logs written as each item finishes (fsync'd), and final artefacts
 * written atomically. Opening an existing directory resumes it: finished records are loaded and
 * never redone; a different configuration is refused unless the caller says to start over.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";
import { PersonaError } from "../errors.js";
import { toolVersion } from "../vectors/format.js";
import { writeFileAtomic } from "../store/atomic.js";
import { JsonlLog, readJsonl } from "../store/jsonl.js";

export interface RunInfo {
  kind: string;
  config: unknown;
  config_hash: string;
  tool_version: string;
  node_version: string;
  created_at: string;
  resumed_at?: string[];
}

/** Stable JSON (sorted keys) so a config's hash does not depend on property order. */
export function stableStringify(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableStringify).join(",")}]`;
  if (v && typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : 1));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${stableStringify(x)}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

export function hashOf(v: unknown): string {
  return createHash("sha256").update(stableStringify(v)).digest("hex").slice(0, 16);
}

/**
 * A cheap, stable fingerprint of a (possibly multi-GB) model file: sha256 over its size and its
 * first and last 8 MiB. Identifies the file a run or a vectors file came from.
 */
/** The model a run used: its file's fingerprint, and each LoRA adapter's with its scale (results depend on both). */
export async function fingerprintModel(info: { path: string; adapters: readonly { path: string; scale: number }[] }): Promise<string> {
  const parts = [await fingerprintFile(info.path)];
  for (const a of info.adapters) parts.push(`lora:${await fingerprintFile(a.path)}@${a.scale}`);
  return parts.join("+");
}

export async function fingerprintFile(file: string): Promise<string> {
  const fh = await open(file, "r");
  try {
    const { size } = await fh.stat();
    const chunk = 8 * 1024 * 1024;
    const h = createHash("sha256").update(String(size));
    const read = async (pos: number, len: number) => {
      const buf = Buffer.alloc(len);
      const { bytesRead } = await fh.read(buf, 0, len, pos);
      h.update(buf.subarray(0, bytesRead));
    };
    await read(0, Math.min(chunk, size));
    if (size > chunk) await read(Math.max(chunk, size - chunk), Math.min(chunk, size - chunk));
    return `sha256-ends:${h.digest("hex").slice(0, 32)}`;
  } finally {
    await fh.close();
  }
}

/**
 * Where a run keeps its state: its configuration (`info`), keyed record logs (finished items,
 * never redone) and final artefacts. `RunDir` is the local-directory implementation; a shared or
 * distributed store (a database, an object bucket) implements the same two interfaces, and
 * pipelines written against them run unchanged.
 */
export interface RunStore {
  readonly info: RunInfo;
  /** True when this run continues an earlier one with the same configuration. */
  readonly resumed: boolean;
  /** A record log by name; appends are durable once they resolve. */
  records<T>(name: string, syncEvery?: number): Promise<RecordStore<T>>;
  /** Replaces an artefact as a whole (readers never see a partial one). */
  writeArtifact(name: string, data: Uint8Array | string): Promise<void>;
  removeArtifact(name: string): Promise<void>;
}

/** Keyed records of one log: the last value of a key wins. */
export interface RecordStore<T> {
  readonly size: number;
  has(key: string): boolean;
  get(key: string): T | undefined;
  entries(): IterableIterator<[string, T]>;
  append(key: string, value: T): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** Keyed records over the append-only JSONL log (store/jsonl.ts): `{"key", "value"}` per line, the last value of a key wins. */
export class RecordLog<T> implements RecordStore<T> {
  private constructor(
    private readonly log: JsonlLog,
    private readonly byKey: Map<string, T>,
  ) {}

  static async open<T>(file: string, syncEvery = 1): Promise<RecordLog<T>> {
    const byKey = new Map<string, T>();
    const parse = (rec: unknown, line: number) => {
      const r = rec as { key?: unknown; value?: T } | null;
      if (typeof r !== "object" || r === null || typeof r.key !== "string" || !("value" in r)) {
        throw new PersonaError("E_BAD_FORMAT", `${file}:${line} is not a {"key", "value"} record; remove the line or the run directory`);
      }
      return { key: r.key, value: r.value as T };
    };
    for await (const rec of readJsonl(file, parse)) byKey.set(rec.key, rec.value);
    return new RecordLog(await JsonlLog.open(file, { syncEvery }), byKey);
  }

  get file(): string {
    return this.log.file;
  }

  get size(): number {
    return this.byKey.size;
  }

  has(key: string): boolean {
    return this.byKey.has(key);
  }

  get(key: string): T | undefined {
    return this.byKey.get(key);
  }

  entries(): IterableIterator<[string, T]> {
    return this.byKey.entries();
  }

  /** Appends one finished item; durable once the returned promise resolves (fsync every `syncEvery`). */
  async append(key: string, value: T): Promise<void> {
    this.byKey.set(key, value);
    await this.log.append([{ key, value }]);
  }

  sync(): Promise<void> {
    return this.log.sync();
  }

  close(): Promise<void> {
    return this.log.close();
  }
}

export interface OpenRunOptions {
  /** Discard an existing run with a different configuration instead of refusing. Defaults to false. */
  restart?: boolean;
}

export class RunDir implements RunStore {
  private constructor(
    readonly dir: string,
    readonly info: RunInfo,
    readonly resumed: boolean,
  ) {}

  /** Creates or resumes `dir` for a run of `kind` with `config`. */
  static async open(dir: string, kind: string, config: unknown, opts: OpenRunOptions = {}): Promise<RunDir> {
    const runFile = path.join(dir, "run.json");
    const configHash = hashOf(config);
    if (existsSync(runFile)) {
      let prev: RunInfo;
      try {
        prev = JSON.parse(await readFile(runFile, "utf8")) as RunInfo;
      } catch {
        throw new PersonaError("E_BAD_FORMAT", `${runFile} is not valid JSON`);
      }
      if (typeof prev !== "object" || prev === null || Array.isArray(prev)) throw new PersonaError("E_BAD_FORMAT", `${runFile} is not a JSON object`);
      if (prev.kind === kind && prev.config_hash === configHash) {
        const info = { ...prev, resumed_at: [...(Array.isArray(prev.resumed_at) ? prev.resumed_at : []), new Date().toISOString()] };
        await writeFileAtomic(runFile, `${JSON.stringify(info, null, 2)}\n`);
        return new RunDir(dir, info, true);
      }
      if (!opts.restart) {
        throw new PersonaError(
          "E_CONFIG_MISMATCH",
          `${dir} holds ${/^[aeiou]/.test(prev.kind) ? "an" : "a"} ${prev.kind} run with another configuration (${prev.config_hash} ≠ ${configHash}); ` +
            `use another --out, or --restart to discard it`,
        );
      }
      // Keep the old run aside rather than deleting what may be hours of work.
      const aside = `${dir.replace(/[\\/]+$/, "")}.old-${Date.now()}`;
      await rename(dir, aside);
    }
    await mkdir(dir, { recursive: true });
    const info: RunInfo = {
      kind,
      config,
      config_hash: configHash,
      tool_version: toolVersion(),
      node_version: process.version,
      created_at: new Date().toISOString(),
    };
    await writeFileAtomic(runFile, `${JSON.stringify(info, null, 2)}\n`);
    return new RunDir(dir, info, false);
  }

  path(name: string): string {
    return path.join(this.dir, name);
  }

  records<T>(name: string, syncEvery = 1): Promise<RecordLog<T>> {
    return RecordLog.open<T>(this.path(name), syncEvery);
  }

  async writeArtifact(name: string, data: Uint8Array | string): Promise<void> {
    await writeFileAtomic(this.path(name), data);
  }

  async removeArtifact(name: string): Promise<void> {
    await rm(this.path(name), { force: true });
  }
}
