/**
 * GGUF reader: parses the header, metadata and tensor table of a GGUF v2/v3 file with a file
 * handle (models are GBs; only the header is read), and validates it the way llama.cpp's
 * gguf.cpp does, so that native code never sees a file it would abort on.
 */
import { open, type FileHandle } from "node:fs/promises";
import { PersonaError } from "../../errors.js";
import {
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VALUE_SIZE,
  GGUF_VERSION,
  GgmlType,
  GgufValueType,
  alignUp,
  bf16ToF32,
  f16ToF32,
  ggmlTypeInfo,
  ggmlTypeName,
  isGgufValueType,
  nElements,
} from "./types.js";

export type GgufValue = number | bigint | boolean | string | GgufArray;

export interface GgufArray {
  itemType: GgufValueType;
  /** Length declared in the file. */
  length: number;
  /** The items read; fewer than `length` when `maxArrayItems` cut the array short. */
  items: GgufValue[];
}

export interface GgufKv {
  key: string;
  type: GgufValueType;
  /** 64-bit integers are bigints; other numbers are numbers. */
  value: GgufValue;
}

export interface GgufTensorInfo {
  name: string;
  type: number;
  typeName: string;
  /** ggml order: ne[0] is the fastest-varying dimension. Always the file's n_dims entries. */
  ne: number[];
  /** Offset from the start of the data section. */
  offset: number;
  nBytes: number;
}

export interface GgufFile {
  path: string;
  version: number;
  alignment: number;
  /** Absolute offset of the tensor data section. */
  dataOffset: number;
  fileSize: number;
  kv: Map<string, GgufKv>;
  tensors: GgufTensorInfo[];
  tensorsByName: Map<string, GgufTensorInfo>;
}

export interface ReadGgufOptions {
  /** Keep at most this many items of each metadata array (the rest is skipped). Defaults to all. */
  maxArrayItems?: number;
}

const CHUNK = 1 << 20;
const MAX_STRING_BYTES = 1 << 30; // gguf.cpp GGUF_MAX_STRING_LENGTH

/** Buffered sequential reader over a file handle; every read past EOF is a truncated header. */
class HeaderReader {
  private buf = Buffer.alloc(0);
  private bufStart = 0; // absolute file offset of buf[0]
  private pos = 0; // absolute offset of the next byte

  constructor(
    private readonly fh: FileHandle,
    readonly fileSize: number,
    private readonly what: () => string,
  ) {}

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.fileSize - this.pos;
  }

  private async ensure(n: number): Promise<Buffer> {
    const rel = this.pos - this.bufStart;
    if (rel + n <= this.buf.length) return this.buf;
    if (this.pos + n > this.fileSize) {
      throw new PersonaError(
        "E_BAD_MODEL",
        `truncated GGUF header: ${this.what()} needs ${n} bytes at offset ${this.pos} but the file has ${this.fileSize} bytes`,
      );
    }
    const size = Math.max(n, Math.min(CHUNK, this.fileSize - this.pos));
    const next = Buffer.alloc(size);
    const { bytesRead } = await this.fh.read(next, 0, size, this.pos);
    if (bytesRead < n) throw new PersonaError("E_BAD_MODEL", `short read at offset ${this.pos} of a GGUF file`);
    this.buf = next.subarray(0, bytesRead);
    this.bufStart = this.pos;
    return this.buf;
  }

  async bytes(n: number): Promise<Buffer> {
    const b = await this.ensure(n);
    const rel = this.pos - this.bufStart;
    this.pos += n;
    return b.subarray(rel, rel + n);
  }

  async skip(n: number): Promise<void> {
    if (this.pos + n > this.fileSize) await this.ensure(n); // throws the truncation error
    this.pos += n;
  }

  async u32(): Promise<number> {
    return (await this.bytes(4)).readUInt32LE(0);
  }

  async i32(): Promise<number> {
    return (await this.bytes(4)).readInt32LE(0);
  }

  async u64(): Promise<bigint> {
    return (await this.bytes(8)).readBigUInt64LE(0);
  }

  async i64(): Promise<bigint> {
    return (await this.bytes(8)).readBigInt64LE(0);
  }

  async string(): Promise<string> {
    const len = await this.u64();
    if (len > BigInt(MAX_STRING_BYTES) || len > BigInt(this.remaining)) {
      throw new PersonaError(
        "E_BAD_MODEL",
        `corrupt GGUF header: ${this.what()} claims a string of ${len} bytes at offset ${this.pos - 8} but only ${this.remaining} bytes remain`,
      );
    }
    return (await this.bytes(Number(len))).toString("utf8");
  }
}

function bad(msg: string): PersonaError {
  return new PersonaError("E_BAD_MODEL", msg);
}

function toSafeNumber(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < 0n) throw bad(`corrupt GGUF header: ${what} = ${v} is out of range`);
  return Number(v);
}

async function readScalar(r: HeaderReader, type: GgufValueType): Promise<number | bigint | boolean | string> {
  switch (type) {
    case GgufValueType.UINT8:
      return (await r.bytes(1)).readUInt8(0);
    case GgufValueType.INT8:
      return (await r.bytes(1)).readInt8(0);
    case GgufValueType.UINT16:
      return (await r.bytes(2)).readUInt16LE(0);
    case GgufValueType.INT16:
      return (await r.bytes(2)).readInt16LE(0);
    case GgufValueType.UINT32:
      return r.u32();
    case GgufValueType.INT32:
      return r.i32();
    case GgufValueType.FLOAT32:
      return (await r.bytes(4)).readFloatLE(0);
    case GgufValueType.BOOL:
      return (await r.bytes(1)).readInt8(0) !== 0;
    case GgufValueType.STRING:
      return r.string();
    case GgufValueType.UINT64:
      return r.u64();
    case GgufValueType.INT64:
      return r.i64();
    case GgufValueType.FLOAT64:
      return (await r.bytes(8)).readDoubleLE(0);
    default:
      throw bad(`internal: not a scalar GGUF type ${type}`);
  }
}

async function readValueType(r: HeaderReader, key: string): Promise<GgufValueType> {
  const t = await r.i32();
  if (!isGgufValueType(t)) throw bad(`corrupt GGUF header: key '${key}' has invalid value type ${t}`);
  return t;
}

async function readArray(r: HeaderReader, key: string, maxItems: number): Promise<GgufArray> {
  const itemType = await readValueType(r, key);
  const length = toSafeNumber(await r.u64(), `length of array '${key}'`);
  // Each item takes at least one byte (strings 8), so a length beyond the file is corrupt: this
  // stops a bogus header from driving a huge allocation.
  const minItem = GGUF_VALUE_SIZE[itemType] ?? (itemType === GgufValueType.STRING ? 8 : 12);
  if (length * minItem > r.remaining) {
    throw bad(
      `corrupt GGUF header: array '${key}' claims ${length} items but only ${r.remaining} bytes remain in the file`,
    );
  }
  const items: GgufValue[] = [];
  const fixed = GGUF_VALUE_SIZE[itemType];
  for (let i = 0; i < length; i++) {
    if (i >= maxItems && fixed !== undefined) {
      await r.skip((length - i) * fixed);
      break;
    }
    const v = itemType === GgufValueType.ARRAY ? await readArray(r, key, maxItems) : await readScalar(r, itemType);
    if (i < maxItems) items.push(v);
  }
  return { itemType, length, items };
}

async function fileSizeOf(fh: FileHandle): Promise<number> {
  return (await fh.stat()).size;
}

async function openForRead(path: string): Promise<FileHandle> {
  let fh: FileHandle;
  try {
    fh = await open(path, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new PersonaError("E_NOT_FOUND", `model file not found: ${path}`, { cause: e });
    throw new PersonaError("E_BAD_MODEL", `cannot open model file ${path}: ${(e as Error).message}`, { cause: e });
  }
  // A directory opens fine on Linux and fails only at the first read, with a bare EISDIR.
  if (!(await fh.stat()).isFile()) {
    await fh.close();
    throw new PersonaError("E_BAD_INPUT", `${path} is not a file; expected a GGUF model file`);
  }
  return fh;
}

/** Reads and validates a GGUF file's header, metadata and tensor table. */
export async function readGguf(path: string, opts: ReadGgufOptions = {}): Promise<GgufFile> {
  const maxItems = opts.maxArrayItems ?? Infinity;
  const fh = await openForRead(path);
  try {
    const fileSize = await fileSizeOf(fh);
    let what = "the magic";
    const r = new HeaderReader(fh, fileSize, () => what);

    if (fileSize < 4) throw bad(`not a GGUF file (${fileSize} bytes): ${path}`);
    const magic = await r.bytes(4);
    if (magic.toString("latin1") !== GGUF_MAGIC) {
      throw bad(`not a GGUF file (magic ${JSON.stringify(magic.toString("latin1"))}, expected "GGUF"): ${path}`);
    }

    what = "the version";
    const version = await r.u32();
    if ((version & 0xffff) === 0 && version !== 0) throw bad(`GGUF version ${version} looks byte-swapped: big-endian files are not supported`);
    if (version === 1) throw bad("GGUF v1 is no longer supported by llama.cpp; re-convert the model");
    if (version < 1 || version > GGUF_VERSION) throw bad(`unsupported GGUF version ${version} (supported: 2, 3)`);

    what = "the tensor count";
    const nTensorsBig = await r.i64();
    what = "the metadata count";
    const nKvBig = await r.i64();
    // Smallest possible tensor info is 24 bytes and smallest KV 13 bytes: counts beyond what the
    // file could hold are corrupt.
    if (nTensorsBig < 0n || nTensorsBig * 24n > BigInt(fileSize)) {
      throw bad(`corrupt GGUF header: it claims ${nTensorsBig} tensors, more than a ${fileSize}-byte file can hold`);
    }
    if (nKvBig < 0n || nKvBig * 13n > BigInt(fileSize)) {
      throw bad(`corrupt GGUF header: it claims ${nKvBig} metadata entries, more than a ${fileSize}-byte file can hold`);
    }
    const nTensors = Number(nTensorsBig);
    const nKv = Number(nKvBig);

    const kv = new Map<string, GgufKv>();
    for (let i = 0; i < nKv; i++) {
      what = `metadata entry ${i}`;
      const key = await r.string();
      if (key === "") throw bad(`corrupt GGUF header: metadata key ${i} is empty`);
      if (kv.has(key)) throw bad(`corrupt GGUF header: duplicate metadata key '${key}'`);
      what = `metadata '${key}'`;
      const type = await readValueType(r, key);
      const value = type === GgufValueType.ARRAY ? await readArray(r, key, maxItems) : await readScalar(r, type);
      kv.set(key, { key, type, value });
    }

    let alignment = GGUF_DEFAULT_ALIGNMENT;
    const alignKv = kv.get("general.alignment");
    if (alignKv) {
      if (alignKv.type !== GgufValueType.UINT32) throw bad("general.alignment must be a u32");
      alignment = alignKv.value as number;
      if (alignment === 0 || (alignment & (alignment - 1)) !== 0) throw bad(`general.alignment ${alignment} is not a power of 2`);
    }

    const tensors: GgufTensorInfo[] = [];
    const tensorsByName = new Map<string, GgufTensorInfo>();
    let expectedOffset = 0;
    for (let i = 0; i < nTensors; i++) {
      what = `tensor info ${i}`;
      const name = await r.string();
      if (Buffer.byteLength(name) >= GGML_MAX_NAME) throw bad(`tensor name '${name}' is too long (max ${GGML_MAX_NAME - 1} bytes)`);
      if (tensorsByName.has(name)) throw bad(`duplicate tensor name '${name}'`);
      what = `tensor '${name}'`;
      const nDims = await r.u32();
      if (nDims > GGML_MAX_DIMS) throw bad(`tensor '${name}' has ${nDims} dimensions (max ${GGML_MAX_DIMS})`);
      const ne: number[] = [];
      for (let d = 0; d < nDims; d++) {
        const n = await r.i64();
        if (n < 0n || n > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`tensor '${name}' dimension ${d} is ${n}`);
        ne.push(Number(n));
      }
      const type = await r.i32();
      const info = ggmlTypeInfo(type);
      if (!info) throw bad(`tensor '${name}' has unknown ggml type ${type}`);
      if ((ne[0] ?? 1) % info.blockSize !== 0) {
        throw bad(`tensor '${name}' (${info.name}) has rows of ${ne[0]} elements, not a multiple of the block size ${info.blockSize}`);
      }
      const count = nElements(ne);
      if (!Number.isSafeInteger(count)) throw bad(`tensor '${name}' has an absurd element count`);
      const nBytes = (count / info.blockSize) * info.typeSize;
      const offset = toSafeNumber(await r.u64(), `offset of tensor '${name}'`);
      // llama.cpp requires tensors packed in table order, each padded to the alignment.
      if (offset !== expectedOffset) {
        throw bad(`tensor '${name}' has data offset ${offset}, expected ${expectedOffset}`);
      }
      expectedOffset = alignUp(offset + nBytes, alignment);
      const t: GgufTensorInfo = { name, type, typeName: ggmlTypeName(type), ne, offset, nBytes };
      tensors.push(t);
      tensorsByName.set(name, t);
    }

    const dataOffset = nTensors > 0 ? alignUp(r.offset, alignment) : r.offset;
    for (const t of tensors) {
      const end = dataOffset + t.offset + t.nBytes;
      if (end > fileSize) {
        throw bad(
          `truncated tensor data: tensor '${t.name}' ends at byte ${end} but the file has ${fileSize} bytes: ${path}`,
        );
      }
    }

    return { path, version, alignment, dataOffset, fileSize, kv, tensors, tensorsByName };
  } finally {
    await fh.close();
  }
}

/** Reads an F32, F16, BF16 or Q8_0 tensor as float32, in ggml order (ne[0] fastest). */
export async function readTensorF32(file: GgufFile, name: string): Promise<Float32Array> {
  const t = file.tensorsByName.get(name);
  if (!t) throw new PersonaError("E_NOT_FOUND", `tensor '${name}' not found in ${file.path}`);
  const count = nElements(t.ne);
  const raw = Buffer.alloc(t.nBytes);
  const fh = await openForRead(file.path);
  try {
    const { bytesRead } = await fh.read(raw, 0, t.nBytes, file.dataOffset + t.offset);
    if (bytesRead !== t.nBytes) throw bad(`truncated tensor data for '${name}' in ${file.path}`);
  } finally {
    await fh.close();
  }
  const out = new Float32Array(count);
  switch (t.type) {
    case GgmlType.F32:
      for (let i = 0; i < count; i++) out[i] = raw.readFloatLE(i * 4);
      return out;
    case GgmlType.F16:
      for (let i = 0; i < count; i++) out[i] = f16ToF32(raw.readUInt16LE(i * 2));
      return out;
    case GgmlType.BF16:
      for (let i = 0; i < count; i++) out[i] = bf16ToF32(raw.readUInt16LE(i * 2));
      return out;
    case GgmlType.Q8_0:
      // Blocks of 32: an F16 scale, then 32 int8 values.
      for (let i = 0; i < count; i++) out[i] = f16ToF32(raw.readUInt16LE((i >> 5) * 34)) * raw.readInt8((i >> 5) * 34 + 2 + (i & 31));
      return out;
    default:
      throw bad(`tensor '${name}' is ${t.typeName}; only F32, F16, BF16 and Q8_0 can be read as floats`);
  }
}

// Metadata accessors. Missing keys give undefined; a key of the wrong kind is a bad model.

export function hasKey(file: GgufFile, key: string): boolean {
  return file.kv.has(key);
}

export function getString(file: GgufFile, key: string): string | undefined {
  const e = file.kv.get(key);
  if (!e) return undefined;
  if (typeof e.value !== "string") throw bad(`metadata '${key}' is not a string`);
  return e.value;
}

/** Any numeric metadata value as a number (64-bit values must fit a double exactly). */
export function getNumber(file: GgufFile, key: string): number | undefined {
  const e = file.kv.get(key);
  if (!e) return undefined;
  if (typeof e.value === "number") return e.value;
  if (typeof e.value === "bigint") {
    if (e.value > BigInt(Number.MAX_SAFE_INTEGER) || e.value < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw bad(`metadata '${key}' = ${e.value} does not fit a double`);
    }
    return Number(e.value);
  }
  throw bad(`metadata '${key}' is not a number`);
}

export function getBool(file: GgufFile, key: string): boolean | undefined {
  const e = file.kv.get(key);
  if (!e) return undefined;
  if (typeof e.value !== "boolean") throw bad(`metadata '${key}' is not a bool`);
  return e.value;
}

export function getArray(file: GgufFile, key: string): GgufArray | undefined {
  const e = file.kv.get(key);
  if (!e) return undefined;
  if (e.type !== GgufValueType.ARRAY) throw bad(`metadata '${key}' is not an array`);
  return e.value as GgufArray;
}

export function getStringArray(file: GgufFile, key: string): string[] | undefined {
  const a = getArray(file, key);
  if (!a) return undefined;
  if (a.itemType !== GgufValueType.STRING) throw bad(`metadata '${key}' is not a string array`);
  return a.items as string[];
}

export function requireString(file: GgufFile, key: string): string {
  const v = getString(file, key);
  if (v === undefined) throw bad(`missing metadata '${key}' in ${file.path}`);
  return v;
}

export function requireNumber(file: GgufFile, key: string): number {
  const v = getNumber(file, key);
  if (v === undefined) throw bad(`missing metadata '${key}' in ${file.path}`);
  return v;
}
