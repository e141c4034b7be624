/**
 * GGUF v3 writer. Metadata is kept in insertion order; tensor data is streamed to disk one
 * tensor (or one generated chunk) at a time, so a large model never sits in one buffer. The
 * file appears atomically (temp file + rename).
 */
import { randomBytes } from "node:crypto";
import { endianness } from "node:os";
import { open, rename, unlink } from "node:fs/promises";
import { PersonaError } from "../../errors.js";
import type { GgufArray, GgufValue } from "./reader.js";
import {
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VERSION,
  GgmlType,
  GgufValueType,
  alignUp,
  f32ToF16,
  nElements,
  tensorBytes,
} from "./types.js";

/** Produces a tensor's values in order, in chunks of any size (ggml order, ne[0] fastest). */
export type TensorChunks = () => Iterable<Float32Array> | AsyncIterable<Float32Array>;

/** Tensor payload: floats, raw F16 bits, or a generator of float chunks. */
export type TensorData = Float32Array | Uint16Array | TensorChunks;

export interface GgufWriterOptions {
  /** Data alignment in bytes (a power of 2); written as general.alignment when not 32. Defaults to 32. */
  alignment?: number;
}

/** Tensor types the writer can encode from floats. */
export type WritableType = typeof GgmlType.F32 | typeof GgmlType.F16 | typeof GgmlType.BF16 | typeof GgmlType.Q8_0;
const WRITABLE: ReadonlySet<number> = new Set([GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0]);

interface PendingTensor {
  name: string;
  ne: number[];
  type: WritableType;
  data: TensorData;
  nBytes: number;
}

/** Little-endian growable byte buffer for the header. */
class ByteSink {
  private buf: Buffer;
  length = 0;

  constructor(capacity = 1 << 16) {
    this.buf = Buffer.alloc(capacity);
  }

  private grow(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  u8(v: number): void {
    this.grow(1);
    this.buf.writeUInt8(v, this.length++);
  }
  i8(v: number): void {
    this.grow(1);
    this.buf.writeInt8(v, this.length++);
  }
  u16(v: number): void {
    this.grow(2);
    this.length = this.buf.writeUInt16LE(v, this.length);
  }
  i16(v: number): void {
    this.grow(2);
    this.length = this.buf.writeInt16LE(v, this.length);
  }
  u32(v: number): void {
    this.grow(4);
    this.length = this.buf.writeUInt32LE(v, this.length);
  }
  i32(v: number): void {
    this.grow(4);
    this.length = this.buf.writeInt32LE(v, this.length);
  }
  u64(v: bigint): void {
    this.grow(8);
    this.length = this.buf.writeBigUInt64LE(v, this.length);
  }
  i64(v: bigint): void {
    this.grow(8);
    this.length = this.buf.writeBigInt64LE(v, this.length);
  }
  f32(v: number): void {
    this.grow(4);
    this.length = this.buf.writeFloatLE(v, this.length);
  }
  f64(v: number): void {
    this.grow(8);
    this.length = this.buf.writeDoubleLE(v, this.length);
  }
  str(s: string): void {
    const b = Buffer.from(s, "utf8");
    this.u64(BigInt(b.length));
    this.grow(b.length);
    b.copy(this.buf, this.length);
    this.length += b.length;
  }
  zeros(n: number): void {
    this.grow(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function badInput(msg: string): PersonaError {
  return new PersonaError("E_BAD_INPUT", msg);
}

function asBigInt(v: GgufValue, key: string): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number" && Number.isInteger(v)) return BigInt(v);
  throw badInput(`metadata '${key}': ${String(v)} is not an integer`);
}

function asInt(v: GgufValue, key: string, min: number, max: number): number {
  const n = typeof v === "bigint" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) {
    throw badInput(`metadata '${key}': ${String(v)} is not an integer in [${min}, ${max}]`);
  }
  return n;
}

function encodeValue(out: ByteSink, type: GgufValueType, v: GgufValue, key: string): void {
  switch (type) {
    case GgufValueType.UINT8:
      return out.u8(asInt(v, key, 0, 0xff));
    case GgufValueType.INT8:
      return out.i8(asInt(v, key, -0x80, 0x7f));
    case GgufValueType.UINT16:
      return out.u16(asInt(v, key, 0, 0xffff));
    case GgufValueType.INT16:
      return out.i16(asInt(v, key, -0x8000, 0x7fff));
    case GgufValueType.UINT32:
      return out.u32(asInt(v, key, 0, 0xffffffff));
    case GgufValueType.INT32:
      return out.i32(asInt(v, key, -0x80000000, 0x7fffffff));
    case GgufValueType.UINT64:
      return out.u64(BigInt.asUintN(64, asBigInt(v, key)));
    case GgufValueType.INT64:
      return out.i64(BigInt.asIntN(64, asBigInt(v, key)));
    case GgufValueType.FLOAT32:
    case GgufValueType.FLOAT64:
      if (typeof v !== "number") throw badInput(`metadata '${key}': ${String(v)} is not a number`);
      return type === GgufValueType.FLOAT32 ? out.f32(v) : out.f64(v);
    case GgufValueType.BOOL:
      if (typeof v !== "boolean") throw badInput(`metadata '${key}': ${String(v)} is not a boolean`);
      return out.i8(v ? 1 : 0);
    case GgufValueType.STRING:
      if (typeof v !== "string") throw badInput(`metadata '${key}': ${String(v)} is not a string`);
      return out.str(v);
    case GgufValueType.ARRAY: {
      if (typeof v !== "object") throw badInput(`metadata '${key}': not an array`);
      out.i32(v.itemType);
      out.u64(BigInt(v.items.length));
      for (const item of v.items) encodeValue(out, v.itemType, item, key);
      return;
    }
  }
}

export class GgufWriter {
  private readonly kv = new Map<string, { type: GgufValueType; value: GgufValue }>();
  private readonly tensors: PendingTensor[] = [];
  private readonly tensorNames = new Set<string>();
  readonly alignment: number;

  constructor(opts: GgufWriterOptions = {}) {
    this.alignment = opts.alignment ?? GGUF_DEFAULT_ALIGNMENT;
    if (!Number.isInteger(this.alignment) || this.alignment <= 0 || (this.alignment & (this.alignment - 1)) !== 0) {
      throw badInput(`alignment ${this.alignment} is not a power of 2`);
    }
    if (this.alignment !== GGUF_DEFAULT_ALIGNMENT) this.setU32("general.alignment", this.alignment);
  }

  /** Sets (or replaces) a metadata entry; the typed setters below are shorthands. */
  set(key: string, type: GgufValueType, value: GgufValue): this {
    if (key === "") throw badInput("metadata key must not be empty");
    // Validate now so that a bad value fails at the call site, not at write time.
    encodeValue(new ByteSink(64), type, value, key);
    this.kv.set(key, { type, value });
    return this;
  }

  setU8(key: string, v: number): this { return this.set(key, GgufValueType.UINT8, v); }
  setI8(key: string, v: number): this { return this.set(key, GgufValueType.INT8, v); }
  setU16(key: string, v: number): this { return this.set(key, GgufValueType.UINT16, v); }
  setI16(key: string, v: number): this { return this.set(key, GgufValueType.INT16, v); }
  setU32(key: string, v: number): this { return this.set(key, GgufValueType.UINT32, v); }
  setI32(key: string, v: number): this { return this.set(key, GgufValueType.INT32, v); }
  setU64(key: string, v: bigint | number): this { return this.set(key, GgufValueType.UINT64, v); }
  setI64(key: string, v: bigint | number): this { return this.set(key, GgufValueType.INT64, v); }
  setF32(key: string, v: number): this { return this.set(key, GgufValueType.FLOAT32, v); }
  setF64(key: string, v: number): this { return this.set(key, GgufValueType.FLOAT64, v); }
  setBool(key: string, v: boolean): this { return this.set(key, GgufValueType.BOOL, v); }
  setString(key: string, v: string): this { return this.set(key, GgufValueType.STRING, v); }

  /** An array of `itemType` values; items of an ARRAY-typed array are GgufArrays (nested). */
  setArray(key: string, itemType: GgufValueType, items: readonly GgufValue[]): this {
    const arr: GgufArray = { itemType, length: items.length, items: [...items] };
    return this.set(key, GgufValueType.ARRAY, arr);
  }

  setStringArray(key: string, items: readonly string[]): this { return this.setArray(key, GgufValueType.STRING, items); }
  setI32Array(key: string, items: readonly number[]): this { return this.setArray(key, GgufValueType.INT32, items); }
  setU32Array(key: string, items: readonly number[]): this { return this.setArray(key, GgufValueType.UINT32, items); }
  setF32Array(key: string, items: readonly number[]): this { return this.setArray(key, GgufValueType.FLOAT32, items); }

  /**
   * Adds a tensor. `ne` is in ggml order (ne[0] fastest, i.e. the row length). Float data is
   * stored as `type`: F32, F16, BF16 or Q8_0 (ggml's reference rounding; chunks must hold whole
   * 32-value blocks). Defaults to F32, or F16 when `data` is a Uint16Array of F16 bits.
   */
  addTensor(name: string, ne: readonly number[], data: TensorData, type?: WritableType): this {
    if (name === "" || Buffer.byteLength(name) >= GGML_MAX_NAME) throw badInput(`bad tensor name '${name}' (1..${GGML_MAX_NAME - 1} bytes)`);
    if (this.tensorNames.has(name)) throw badInput(`duplicate tensor '${name}'`);
    if (ne.length < 1 || ne.length > GGML_MAX_DIMS || ne.some((n) => !Number.isInteger(n) || n < 0)) {
      throw badInput(`tensor '${name}': bad shape [${ne.join(", ")}]`);
    }
    const t = type ?? (data instanceof Uint16Array ? GgmlType.F16 : GgmlType.F32);
    if (!WRITABLE.has(t)) throw badInput(`tensor '${name}': only F32, F16, BF16 and Q8_0 can be written`);
    if (t === GgmlType.Q8_0 && ne[0]! % 32 !== 0) throw badInput(`tensor '${name}': Q8_0 needs rows of a multiple of 32 values, not ${ne[0]}`);
    if (data instanceof Uint16Array && t !== GgmlType.F16) throw badInput(`tensor '${name}': Uint16Array data means F16 bits`);
    if (typeof data !== "function" && data.length !== nElements(ne)) {
      throw badInput(`tensor '${name}': ${data.length} values for shape [${ne.join(", ")}]`);
    }
    this.tensors.push({ name, ne: [...ne], type: t, data, nBytes: tensorBytes(t, ne) });
    this.tensorNames.add(name);
    return this;
  }

  private header(): Buffer {
    const out = new ByteSink();
    for (const c of GGUF_MAGIC) out.u8(c.charCodeAt(0));
    out.u32(GGUF_VERSION);
    out.i64(BigInt(this.tensors.length));
    out.i64(BigInt(this.kv.size));
    for (const [key, { type, value }] of this.kv) {
      out.str(key);
      out.i32(type);
      encodeValue(out, type, value, key);
    }
    let offset = 0;
    for (const t of this.tensors) {
      out.str(t.name);
      out.u32(t.ne.length);
      for (const n of t.ne) out.i64(BigInt(n));
      out.i32(t.type);
      out.u64(BigInt(offset));
      offset = alignUp(offset + t.nBytes, this.alignment);
    }
    out.zeros(alignUp(out.length, this.alignment) - out.length);
    return out.bytes();
  }

  /** Writes the file atomically: to a temp file beside `path`, then renamed over it. `onTensor` follows progress. */
  async write(path: string, onTensor?: (done: number, total: number, name: string) => void): Promise<void> {
    // Tensor bytes are the host's float layout; GGUF is little-endian.
    if (endianness() !== "LE") throw new PersonaError("E_INTERNAL", "writing GGUF needs a little-endian host");
    const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
    const fh = await open(tmp, "w");
    try {
      let pos = 0;
      const put = async (b: Uint8Array): Promise<void> => {
        let done = 0;
        while (done < b.length) {
          const { bytesWritten } = await fh.write(b, done, b.length - done, pos + done);
          done += bytesWritten;
        }
        pos += b.length;
      };
      await put(this.header());
      for (const t of this.tensors) {
        const written = await writeTensorData(t, put);
        if (written !== t.nBytes) {
          throw badInput(`tensor '${t.name}': generator produced ${written} bytes, expected ${t.nBytes}`);
        }
        const pad = alignUp(pos, this.alignment) - pos;
        if (pad > 0) await put(new Uint8Array(pad));
        onTensor?.(this.tensors.indexOf(t) + 1, this.tensors.length, t.name);
      }
      await fh.sync();
      await fh.close();
      await rename(tmp, path);
    } catch (e) {
      await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
  }
}

function toBytes(chunk: Float32Array, type: PendingTensor["type"]): Uint8Array {
  switch (type) {
    case GgmlType.F32:
      return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    case GgmlType.F16: {
      const half = new Uint16Array(chunk.length);
      for (let i = 0; i < chunk.length; i++) half[i] = f32ToF16(chunk[i]!);
      return new Uint8Array(half.buffer);
    }
    case GgmlType.BF16: {
      const bits = new Uint32Array(Float32Array.from(chunk).buffer);
      const out = new Uint16Array(chunk.length);
      // ggml_compute_fp32_to_bf16: round to nearest even; NaN stays a quiet NaN.
      for (let i = 0; i < bits.length; i++) {
        const u = bits[i]!;
        out[i] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 64 : (u + (0x7fff + ((u >>> 16) & 1))) >>> 16;
      }
      return new Uint8Array(out.buffer);
    }
    case GgmlType.Q8_0:
      return quantizeQ8_0(chunk);
  }
}

/** ggml's quantize_row_q8_0_ref: per 32 values an F16 scale d = max|x|/127 and int8 round(x/d). */
function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw badInput(`Q8_0 data chunks must hold whole 32-value blocks, got ${x.length} values`);
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 34);
  const view = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    view.setUint16(b * 34, f32ToF16(d), true);
    for (let j = 0; j < 32; j++) {
      const v = Math.fround(x[b * 32 + j]! * id);
      view.setInt8(b * 34 + 2 + j, Math.sign(v) * Math.round(Math.abs(v))); // roundf: halves away from zero
    }
  }
  return out;
}

async function writeTensorData(t: PendingTensor, put: (b: Uint8Array) => Promise<void>): Promise<number> {
  if (t.data instanceof Uint16Array) {
    await put(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    return t.data.byteLength;
  }
  if (t.data instanceof Float32Array) {
    const b = toBytes(t.data, t.type);
    await put(b);
    return b.length;
  }
  let n = 0;
  for await (const chunk of t.data()) {
    const b = toBytes(chunk, t.type);
    await put(b);
    n += b.length;
  }
  return n;
}
