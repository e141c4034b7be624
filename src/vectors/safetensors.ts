import { endianness } from "node:os";
import { readFile } from "node:fs/promises";
import { f16ToF32 } from "../engine/gguf/types.js";
import { PersonaError } from "../errors.js";
import { writeFileAtomic } from "../store/atomic.js";

/**
 * Reader and writer for the safetensors format: an 8-byte little-endian header length, a JSON
 * header `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {str: str}}`, then
 * the raw little-endian tensor bytes (offsets are relative to the end of the header).
 */

/** A tensor as this project holds it: always float32, row-major. */
export interface FloatTensor {
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsContent {
  /** Tensors in header order, every float dtype converted to float32. */
  tensors: Map<string, FloatTensor & { dtype: string }>;
  /** The `__metadata__` map; empty when the file has none. */
  metadata: Record<string, string>;
}

/** Bytes per element of every dtype the format defines, so that any file can be validated. */
const DTYPE_SIZE: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

/** The reference implementation refuses headers above 100 MB; a vectors file's header is a few KB. */
const MAX_HEADER_BYTES = 100_000_000;

export async function readSafetensors(path: string): Promise<SafetensorsContent> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      throw new PersonaError("E_NOT_FOUND", `safetensors file not found: ${path}`);
    }
    throw e;
  }
  return parseSafetensors(bytes, path);
}

/** Parses a whole safetensors file held in memory; `fileName` only labels error messages. */
export function parseSafetensors(bytes: Uint8Array, fileName: string): SafetensorsContent {
  const bad = (why: string): PersonaError =>
    new PersonaError("E_BAD_FORMAT", `${fileName}: not a valid safetensors file: ${why}`);
  if (bytes.length < 8) throw bad(`file is ${bytes.length} bytes, shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = view.getBigUint64(0, true);
  if (headerLen < 2n || headerLen > BigInt(MAX_HEADER_BYTES) || headerLen > BigInt(bytes.length - 8)) {
    throw bad(`header length ${headerLen} does not fit a file of ${bytes.length} bytes`);
  }
  const dataStart = 8 + Number(headerLen);
  const { metadata, entries } = parseSafetensorsHeader(bytes.subarray(8, dataStart), bytes.length - dataStart, fileName);

  const tensors: SafetensorsContent["tensors"] = new Map();
  for (const e of entries) {
    const raw = bytes.subarray(dataStart + e.begin, dataStart + e.end);
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: toFloat32(raw, e.dtype, `${fileName}: tensor "${e.name}"`) });
  }
  return { tensors, metadata };
}

/** One tensor's place in a safetensors file; offsets are relative to the data section. */
export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Validates a safetensors JSON header (dtypes, shapes, offsets inside a `dataLen`-byte data
 * section, no overlaps) without reading any tensor, so large checkpoints can be read lazily.
 */
export function parseSafetensorsHeader(headerBytes: Uint8Array, dataLen: number, fileName: string): { metadata: Record<string, string>; entries: SafetensorsEntry[] } {
  const bad = (why: string): PersonaError =>
    new PersonaError("E_BAD_FORMAT", `${fileName}: not a valid safetensors file: ${why}`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch {
    throw bad("header is not UTF-8 JSON");
  }
  if (!isRecord(header)) throw bad("header is not a JSON object");

  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (!isRecord(value)) throw bad("__metadata__ is not an object");
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== "string") throw bad(`__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (!isRecord(value)) throw bad(`entry "${name}" is not an object`);
    const { dtype, shape, data_offsets: offsets } = value;
    if (typeof dtype !== "string" || !(dtype in DTYPE_SIZE)) throw bad(`tensor "${name}" has unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) throw bad(`tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
      throw bad(`tensor "${name}" has invalid data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end || end > dataLen) {
      throw bad(`tensor "${name}" data_offsets [${begin}, ${end}] lie outside the ${dataLen}-byte data section`);
    }
    const expected = (shape as number[]).reduce((a, b) => a * b, 1) * (DTYPE_SIZE[dtype] ?? 0);
    if (expected !== end - begin) {
      throw bad(`tensor "${name}" is ${dtype} [${shape.join(", ")}] (${expected} bytes) but its data_offsets span ${end - begin} bytes`);
    }
    entries.push({ name, dtype, shape: shape as number[], begin, end });
  }

  const byStart = [...entries].sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1]!;
    const cur = byStart[i]!;
    if (cur.begin < prev.end) throw bad(`tensors "${prev.name}" and "${cur.name}" overlap`);
  }
  return { metadata, entries };
}

/**
 * The bytes before the tensor data (length, JSON header, padding) for float32 tensors of these
 * shapes, in order; the data follows as each tensor's values, row-major, little-endian.
 */
export function safetensorsHeader(shapes: ReadonlyMap<string, readonly number[]>, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, shape] of shapes) {
    if (name === "__metadata__") throw new PersonaError("E_BAD_INPUT", `"__metadata__" cannot be a tensor name`);
    if (!shape.every((d) => isNonNegInt(d))) throw new PersonaError("E_SHAPE", `tensor "${name}": shape [${shape.join(", ")}] is not a list of sizes`);
    const numel = shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + numel * 4] };
    offset += numel * 4;
  }
  // Pad the header with spaces to a multiple of 8 so every tensor stays aligned in memory-mapped readers.
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, "utf-8");
  const out = new Uint8Array(8 + headerBytes.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  return out;
}

/** float32 values as little-endian bytes (a view on little-endian hosts, a copy otherwise). */
export function float32Bytes(data: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN_HOST) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.byteLength);
  const view = new DataView(out.buffer);
  data.forEach((x, i) => view.setFloat32(i * 4, x, true));
  return out;
}

/** Serialises float32 tensors (in the given order) and string metadata to safetensors bytes. */
export function encodeSafetensors(tensors: ReadonlyMap<string, FloatTensor>, metadata: Record<string, string> = {}): Uint8Array {
  for (const [name, t] of tensors) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (!t.shape.every(isNonNegInt) || numel !== t.data.length) {
      throw new PersonaError("E_SHAPE", `tensor "${name}": shape [${t.shape.join(", ")}] does not match ${t.data.length} values`);
    }
  }
  const header = safetensorsHeader(new Map([...tensors].map(([name, t]) => [name, t.shape])), metadata);
  let size = header.length;
  for (const t of tensors.values()) size += t.data.byteLength;
  const out = new Uint8Array(size);
  out.set(header);
  let pos = header.length;
  for (const t of tensors.values()) {
    out.set(float32Bytes(t.data), pos);
    pos += t.data.byteLength;
  }
  return out;
}

export async function writeSafetensors(path: string, tensors: ReadonlyMap<string, FloatTensor>, metadata: Record<string, string> = {}): Promise<void> {
  await writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}

const LITTLE_ENDIAN_HOST = endianness() === "LE";

/** Converts little-endian float storage of the given dtype to a fresh Float32Array. */
export function toFloat32(raw: Uint8Array, dtype: string, label: string): Float32Array {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (dtype) {
    case "F32": {
      // Copy into a fresh, aligned buffer (a Buffer's slice() would not copy).
      if (LITTLE_ENDIAN_HOST) return new Float32Array(new Uint8Array(raw).buffer);
      const out = new Float32Array(raw.byteLength / 4);
      for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    }
    case "F64": {
      const out = new Float32Array(raw.byteLength / 8);
      for (let i = 0; i < out.length; i++) out[i] = view.getFloat64(i * 8, true);
      return out;
    }
    case "F16": {
      const out = new Float32Array(raw.byteLength / 2);
      for (let i = 0; i < out.length; i++) out[i] = f16ToF32(view.getUint16(i * 2, true));
      return out;
    }
    case "BF16": {
      const out = new Float32Array(raw.byteLength / 2);
      const bits = new Uint32Array(out.buffer);
      // bfloat16 is the top half of a float32.
      for (let i = 0; i < out.length; i++) bits[i] = view.getUint16(i * 2, true) << 16;
      return out;
    }
    default:
      throw new PersonaError("E_BAD_FORMAT", `${label} has dtype ${dtype}; only F32, F16, BF16 and F64 tensors can be read`);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}
