/**
 * A Hugging Face checkpoint directory read lazily: `config.json`, and the tensors of
 * `model.safetensors` or of the shards `model.safetensors.index.json` lists, each read from disk
 * in row blocks only when written out, so converting never holds more than a block in memory.
 */
import { open, readFile } from "node:fs/promises";
import path from "node:path";
import { PersonaError } from "../errors.js";
import { type SafetensorsEntry, parseSafetensorsHeader, toFloat32 } from "../vectors/safetensors.js";

export interface CheckpointTensor extends SafetensorsEntry {
  /** Shard file holding the tensor. */
  file: string;
  /** Absolute byte offset of the data in the file. */
  offset: number;
}

export interface Checkpoint {
  dir: string;
  /** `config.json` as parsed JSON. */
  config: Record<string, unknown>;
  tensors: Map<string, CheckpointTensor>;
}

const HEADER_MAX = 100_000_000;

async function readHeader(file: string): Promise<CheckpointTensor[]> {
  const fh = await open(file, "r").catch((e: NodeJS.ErrnoException) => {
    throw new PersonaError(e.code === "ENOENT" ? "E_NOT_FOUND" : "E_BAD_MODEL", `cannot open ${file}: ${e.message}`);
  });
  try {
    const { size } = await fh.stat();
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const len = Number(lenBuf.readBigUInt64LE(0));
    if (size < 8 || len < 2 || len > HEADER_MAX || 8 + len > size) throw new PersonaError("E_BAD_MODEL", `${file}: not a safetensors file (header length ${len}, file ${size} bytes)`);
    const header = Buffer.alloc(len);
    await fh.read(header, 0, len, 8);
    const { entries } = parseSafetensorsHeader(header, size - 8 - len, file);
    return entries.map((e) => ({ ...e, file, offset: 8 + len + e.begin }));
  } finally {
    await fh.close();
  }
}

export async function openCheckpoint(dir: string): Promise<Checkpoint> {
  const cfgFile = path.join(dir, "config.json");
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(await readFile(cfgFile, "utf8")) as Record<string, unknown>;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new PersonaError("E_NOT_FOUND", `${dir} has no config.json: not a Hugging Face checkpoint directory`);
    throw new PersonaError("E_BAD_FORMAT", `${cfgFile} is not valid JSON`);
  }
  const indexFile = path.join(dir, "model.safetensors.index.json");
  let shards: string[];
  try {
    const index = JSON.parse(await readFile(indexFile, "utf8")) as { weight_map?: unknown } | null;
    const map = index?.weight_map;
    if (!map || typeof map !== "object" || Array.isArray(map)) throw new PersonaError("E_BAD_FORMAT", `${indexFile} has no weight_map object`);
    for (const [name, file] of Object.entries(map)) {
      if (typeof file !== "string" || file === "") throw new PersonaError("E_BAD_FORMAT", `${indexFile}: weight_map.${name} is ${JSON.stringify(file)}, not a shard file name`);
    }
    shards = [...new Set(Object.values(map as Record<string, string>))].sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e instanceof PersonaError ? e : new PersonaError("E_BAD_FORMAT", `${indexFile} is not valid JSON`);
    shards = ["model.safetensors"];
  }
  return { dir, config, tensors: await openShards(dir, shards) };
}

/** The tensor tables of safetensors files in `dir` (headers only). */
export async function openShards(dir: string, shards: readonly string[]): Promise<Map<string, CheckpointTensor>> {
  const tensors = new Map<string, CheckpointTensor>();
  for (const shard of shards) {
    if (shard.includes("/") || shard.includes("\\")) throw new PersonaError("E_BAD_FORMAT", `${dir}: shard "${shard}" is not a file name`);
    for (const t of await readHeader(path.join(dir, shard))) {
      if (tensors.has(t.name)) throw new PersonaError("E_BAD_MODEL", `tensor ${t.name} is in both ${tensors.get(t.name)!.file} and ${t.file}`);
      tensors.set(t.name, t);
    }
  }
  return tensors;
}

/** Reads rows [row0, row0+nRows) of a 1-D/2-D tensor as float32. */
export async function readRows(t: CheckpointTensor, row0: number, nRows: number): Promise<Float32Array> {
  const cols = t.shape.length === 1 ? t.shape[0]! : t.shape[1]!;
  const elt = (t.end - t.begin) / t.shape.reduce((a, b) => a * b, 1);
  const start = t.offset + row0 * cols * elt;
  const bytes = Buffer.alloc(nRows * cols * elt);
  const fh = await open(t.file, "r");
  try {
    const { bytesRead } = await fh.read(bytes, 0, bytes.length, start);
    if (bytesRead !== bytes.length) throw new PersonaError("E_BAD_MODEL", `${t.file}: tensor ${t.name} is truncated`);
  } finally {
    await fh.close();
  }
  return toFloat32(bytes, t.dtype, `${t.file}: tensor ${t.name}`);
}

/** A whole (small) tensor as float32. */
export function readTensor(t: CheckpointTensor): Promise<Float32Array> {
  return readRows(t, 0, t.shape.length === 1 ? 1 : t.shape[0]!);
}
