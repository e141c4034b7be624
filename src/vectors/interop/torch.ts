import { readFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { inflateRawSync } from "node:zlib";
import { PersonaError } from "../../errors.js";
import { type LayerMatrix, type PersonaVectors, type VectorTensorName, type VectorsModelMeta, TENSOR_NAMES, isTensorName, validateVectors } from "../format.js";
import { toFloat32 } from "../safetensors.js";

/**
 * Reads the reference implementation's `torch.save` files without Python. Such a file is a zip
 * holding `<archive>/data.pkl` (a pickle whose tensors point at storages through persistent ids),
 * `<archive>/data/<key>` (raw storage bytes) and `<archive>/byteorder`. Only what a saved tensor
 * or dict of tensors needs is implemented; anything else is refused with E_BAD_FORMAT.
 */

export interface ImportedTensor {
  /** Key in the saved dict; absent when the file holds a single tensor. */
  name?: string;
  shape: number[];
  data: Float32Array;
}

export async function importPt(path: string): Promise<ImportedTensor[]> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new PersonaError("E_NOT_FOUND", `.pt file not found: ${path}`);
    throw e;
  }
  return parsePt(bytes, path);
}

/** Parses a torch zip held in memory; `label` names the file in errors. */
export function parsePt(bytes: Uint8Array, label: string): ImportedTensor[] {
  const bad = (why: string): PersonaError => new PersonaError("E_BAD_FORMAT", `${label}: cannot read torch file: ${why}`);
  const zip = readZip(bytes, bad);
  const pklName = [...zip.keys()].find((n) => n === "data.pkl" || n.endsWith("/data.pkl"));
  if (!pklName) throw bad("no data.pkl in the archive (legacy non-zip torch files are not supported)");
  const prefix = pklName.slice(0, pklName.length - "data.pkl".length);
  const byteorderRaw = zip.get(`${prefix}byteorder`);
  const byteorder = byteorderRaw ? new TextDecoder().decode(byteorderRaw).trim() : "little";
  if (byteorder !== "little" && byteorder !== "big") throw bad(`unknown byteorder "${byteorder}"`);

  const storage = (key: string): Uint8Array => {
    const raw = zip.get(`${prefix}data/${key}`);
    if (!raw) throw bad(`storage "${key}" is missing from the archive`);
    return raw;
  };
  const root = unpickle(zip.get(pklName)!, { storage, bigEndian: byteorder === "big", bad });

  if (isObj(root, "tensor")) return [{ shape: root.shape, data: root.data }];
  if (isObj(root, "dict")) {
    const out: ImportedTensor[] = [];
    for (const [k, v] of root.entries) {
      if (typeof k !== "string") throw bad(`dict key ${String(k)} is not a string`);
      if (!isObj(v, "tensor")) throw bad(`dict entry "${k}" is not a tensor`);
      out.push({ name: k, shape: v.shape, data: v.data });
    }
    if (out.length === 0) throw bad("the saved dict is empty");
    return out;
  }
  throw bad(`holds ${describe(root)}, expected a tensor or a dict of tensors`);
}

export interface PtToVectorsOptions {
  /** Trait name. Defaults to the file name's prefix (`evil_response_avg_diff.pt` → "evil"). */
  trait?: string;
  /** Model description; `nLayer`/`nEmbd` are taken from the tensor shape. Defaults to the name of the file's folder (the reference saves under `persona_vectors/<model>/`). */
  model?: Partial<Omit<VectorsModelMeta, "nLayer" | "nEmbd">>;
  /** Also read the sibling files of the reference's other tensors (`<trait>_prompt_avg_diff.pt`, …) when present. Defaults to true. */
  siblings?: boolean;
}

/** `<trait>_<tensor>_diff.pt`, the reference implementation's naming. */
const REFERENCE_NAME = new RegExp(`^(.+?)_(${TENSOR_NAMES.join("|")})(?:_diff)?\\.pt$`);

/**
 * Converts reference `.pt` file(s) into PersonaVectors. A single `[n_layer+1, n_embd]` tensor goes
 * to the tensor its file name names (default `response_avg`); a dict supplies tensors by key.
 */
export async function ptToVectors(path: string, opts: PtToVectorsOptions = {}): Promise<PersonaVectors> {
  const match = REFERENCE_NAME.exec(basename(path));
  const trait = opts.trait ?? match?.[1] ?? basename(path).replace(/\.pt$/, "");
  const tensors: Partial<Record<VectorTensorName, LayerMatrix>> = {};

  const take = async (file: string, single: VectorTensorName): Promise<void> => {
    const items = await importPt(file);
    for (const t of items) {
      const name = t.name ?? single;
      if (!isTensorName(name)) {
        throw new PersonaError("E_BAD_FORMAT", `${file}: tensor "${name}" is not one of ${TENSOR_NAMES.join(", ")}`);
      }
      if (t.shape.length !== 2) {
        throw new PersonaError("E_BAD_FORMAT", `${file}: tensor "${name}" has shape [${t.shape.join(", ")}], expected [n_layer+1, n_embd]`);
      }
      tensors[name] = { nLayerPlus1: t.shape[0]!, nEmbd: t.shape[1]!, data: t.data };
    }
  };

  const own = (match?.[2] as VectorTensorName | undefined) ?? "response_avg";
  await take(path, own);
  const sources = [basename(path)];
  if (match && (opts.siblings ?? true)) {
    for (const other of TENSOR_NAMES) {
      if (other === own || tensors[other]) continue;
      const sibling = join(dirname(path), `${match[1]}_${other}_diff.pt`);
      try {
        await take(sibling, other);
        sources.push(basename(sibling));
      } catch (e) {
        if (!(e instanceof PersonaError && e.code === "E_NOT_FOUND")) throw e;
      }
    }
  }
  const first = TENSOR_NAMES.map((n) => tensors[n]).find((m) => m !== undefined);
  if (!first) throw new PersonaError("E_BAD_FORMAT", `${path}: holds no tensor`);
  const { nLayerPlus1, nEmbd } = first;
  const model: VectorsModelMeta = { name: opts.model?.name ?? basename(dirname(path)), nLayer: nLayerPlus1 - 1, nEmbd };
  if (opts.model?.arch !== undefined) model.arch = opts.model.arch;
  if (opts.model?.fileHash !== undefined) model.fileHash = opts.model.fileHash;
  const v: PersonaVectors = { tensors, meta: { trait, source: "import-pt", model, extra: { imported_from: sources.join(",") } } };
  validateVectors(v, path);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Zip: central directory → entries; stored and deflated members, zip64 sizes, CRC-checked.

type Bad = (why: string) => PersonaError;

function readZip(b: Uint8Array, bad: Bad): Map<string, Uint8Array> {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  // The end-of-central-directory record is 22 bytes plus a comment of up to 65535 bytes.
  let eocd = -1;
  for (let i = b.length - 22; i >= Math.max(0, b.length - 22 - 0xffff); i--) {
    if (v.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw bad("not a zip archive (no end of central directory)");
  let count = v.getUint16(eocd + 10, true);
  let cdOffset = v.getUint32(eocd + 16, true);
  if (count === 0xffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || v.getUint32(loc, true) !== 0x07064b50) throw bad("zip64 locator missing");
    const z64 = num(v.getBigUint64(loc + 8, true));
    if (z64 + 56 > b.length || v.getUint32(z64, true) !== 0x06064b50) throw bad("zip64 end of central directory missing");
    count = num(v.getBigUint64(z64 + 32, true));
    cdOffset = num(v.getBigUint64(z64 + 48, true));
  }

  const entries = new Map<string, Uint8Array>();
  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    if (p + 46 > b.length || v.getUint32(p, true) !== 0x02014b50) throw bad(`corrupt central directory entry ${i}`);
    const flags = v.getUint16(p + 8, true);
    const method = v.getUint16(p + 10, true);
    const crc = v.getUint32(p + 16, true);
    let compSize = v.getUint32(p + 20, true);
    let size = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    let local = v.getUint32(p + 42, true);
    if (p + 46 + nameLen + extraLen + commentLen > b.length) throw bad(`central directory entry ${i} runs past the end of the file`);
    const name = new TextDecoder().decode(b.subarray(p + 46, p + 46 + nameLen));
    // Zip64 extra field: the 64-bit values appear in this order, only for fields saturated at 0xffffffff.
    for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen; ) {
      const id = v.getUint16(e, true);
      const len = v.getUint16(e + 2, true);
      if (id === 0x0001) {
        let q = e + 4;
        const next = (): number => {
          if (q + 8 > e + 4 + len) throw bad(`member "${name}" has a truncated zip64 extra field`);
          const x = num(v.getBigUint64(q, true));
          q += 8;
          return x;
        };
        if (size === 0xffffffff) size = next();
        if (compSize === 0xffffffff) compSize = next();
        if (local === 0xffffffff) local = next();
      }
      e += 4 + len;
    }
    p += 46 + nameLen + extraLen + commentLen;

    if (flags & 1) throw bad(`member "${name}" is encrypted`);
    if (local + 30 > b.length || v.getUint32(local, true) !== 0x04034b50) throw bad(`member "${name}" has no local header`);
    const start = local + 30 + v.getUint16(local + 26, true) + v.getUint16(local + 28, true);
    if (start + compSize > b.length) throw bad(`member "${name}" runs past the end of the file`);
    const raw = b.subarray(start, start + compSize);
    let data: Uint8Array;
    if (method === 0) data = raw;
    else if (method === 8) {
      try {
        data = inflateRawSync(raw);
      } catch {
        throw bad(`member "${name}" does not inflate`);
      }
    } else throw bad(`member "${name}" uses unsupported compression method ${method}`);
    if (data.length !== size) throw bad(`member "${name}" is ${data.length} bytes, directory says ${size}`);
    if (crc32(data) !== crc) throw bad(`member "${name}" fails its CRC check`);
    entries.set(name, data);
  }
  return entries;
}

function num(x: bigint): number {
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) return Number.MAX_SAFE_INTEGER;
  return Number(x);
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Pickle: the subset of the VM that torch.save emits for tensors and (ordered) dicts.

type PyKey = string | number | boolean | null;
type PyValue =
  | null
  | boolean
  | number
  | string
  | { kind: "tuple"; items: PyValue[] }
  | { kind: "list"; items: PyValue[] }
  | { kind: "dict"; entries: Map<PyKey, PyValue> }
  | { kind: "global"; module: string; name: string }
  | { kind: "storage"; dtype: string; elem: number; key: string; numel: number }
  | { kind: "tensor"; shape: number[]; data: Float32Array };
type PyObj = Exclude<PyValue, null | boolean | number | string>;

/** Storage class → (safetensors-style dtype name, bytes per element). */
const STORAGE_TYPES: Record<string, [string, number]> = {
  FloatStorage: ["F32", 4],
  HalfStorage: ["F16", 2],
  BFloat16Storage: ["BF16", 2],
  DoubleStorage: ["F64", 8],
  LongStorage: ["I64", 8],
  IntStorage: ["I32", 4],
  ShortStorage: ["I16", 2],
  CharStorage: ["I8", 1],
  ByteStorage: ["U8", 1],
  BoolStorage: ["BOOL", 1],
};

const MARK = Symbol("mark");
type StackItem = PyValue | typeof MARK;

interface UnpickleEnv {
  storage: (key: string) => Uint8Array;
  bigEndian: boolean;
  bad: Bad;
}

function unpickle(b: Uint8Array, env: UnpickleEnv): PyValue {
  const { bad } = env;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const stack: StackItem[] = [];
  const memo = new Map<number, PyValue>();
  let p = 0;

  const need = (n: number): number => {
    if (p + n > b.length) throw bad("data.pkl is truncated");
    const at = p;
    p += n;
    return at;
  };
  const pop = (): PyValue => {
    const x = stack.pop();
    if (x === undefined || x === MARK) throw bad("pickle stack underflow");
    return x;
  };
  const top = (): PyValue => {
    const x = stack[stack.length - 1];
    if (x === undefined || x === MARK) throw bad("pickle stack underflow");
    return x;
  };
  const popMark = (): PyValue[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) throw bad("pickle MARK missing");
    const items = stack.splice(i) as PyValue[];
    items.shift();
    return items;
  };
  const line = (): string => {
    const end = b.indexOf(0x0a, p);
    if (end < 0) throw bad("data.pkl is truncated");
    const s = new TextDecoder().decode(b.subarray(p, end));
    p = end + 1;
    return s;
  };
  const text = (n: number): string => new TextDecoder().decode(b.subarray(need(n), p));
  const asKey = (k: PyValue): PyKey => {
    if (typeof k === "object" && k !== null) throw bad(`unsupported dict key ${describe(k)}`);
    return k;
  };
  const setItems = (d: PyValue, kv: PyValue[]): void => {
    if (!isObj(d, "dict")) throw bad(`SETITEM on ${describe(d)}`);
    for (let i = 0; i + 1 < kv.length; i += 2) d.entries.set(asKey(kv[i]!), kv[i + 1]!);
  };
  const append = (l: PyValue, items: PyValue[]): void => {
    if (!isObj(l, "list")) throw bad(`APPEND on ${describe(l)}`);
    l.items.push(...items);
  };

  for (;;) {
    const op = b[need(1)]!;
    switch (op) {
      case 0x80: {
        // PROTO
        const proto = b[need(1)]!;
        if (proto > 5) throw bad(`pickle protocol ${proto} is not supported`);
        break;
      }
      case 0x95: // FRAME: framing is only a read-ahead hint
        need(8);
        break;
      case 0x63: // GLOBAL
        stack.push({ kind: "global", module: line(), name: line() });
        break;
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof name !== "string" || typeof module !== "string") throw bad("STACK_GLOBAL needs two strings");
        stack.push({ kind: "global", module, name });
        break;
      }
      case 0x71: // BINPUT
        memo.set(b[need(1)]!, top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(v.getUint32(need(4), true), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const idx = op === 0x68 ? b[need(1)]! : v.getUint32(need(4), true);
        if (!memo.has(idx)) throw bad(`pickle memo ${idx} is undefined`);
        stack.push(memo.get(idx)!);
        break;
      }
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push({ kind: "tuple", items: [] });
        break;
      case 0x74: // TUPLE
        stack.push({ kind: "tuple", items: popMark() });
        break;
      case 0x85: // TUPLE1
      case 0x86: // TUPLE2
      case 0x87: {
        // TUPLE3
        const n = op - 0x84;
        const items: PyValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        stack.push({ kind: "tuple", items });
        break;
      }
      case 0x5d: // EMPTY_LIST
        stack.push({ kind: "list", items: [] });
        break;
      case 0x61: {
        // APPEND
        const x = pop();
        append(top(), [x]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push({ kind: "dict", entries: new Map() });
        break;
      case 0x73: {
        // SETITEM
        const val = pop();
        const key = pop();
        setItems(top(), [key, val]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const kv = popMark();
        setItems(top(), kv);
        break;
      }
      case 0x4a: // BININT
        stack.push(v.getInt32(need(4), true));
        break;
      case 0x4b: // BININT1
        stack.push(b[need(1)]!);
        break;
      case 0x4d: // BININT2
        stack.push(v.getUint16(need(2), true));
        break;
      case 0x8a: {
        // LONG1: little-endian two's complement of n bytes
        const n = b[need(1)]!;
        const at = need(n);
        let x = 0n;
        for (let i = n - 1; i >= 0; i--) x = (x << 8n) | BigInt(b[at + i]!);
        if (n > 0 && b[at + n - 1]! & 0x80) x -= 1n << BigInt(8 * n);
        if (x > BigInt(Number.MAX_SAFE_INTEGER) || x < BigInt(Number.MIN_SAFE_INTEGER)) throw bad("integer too large");
        stack.push(Number(x));
        break;
      }
      case 0x47: // BINFLOAT (big-endian double)
        stack.push(v.getFloat64(need(8), false));
        break;
      case 0x58: // BINUNICODE
        stack.push(text(v.getUint32(need(4), true)));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(b[need(1)]!));
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop();
        if (!isObj(args, "tuple")) throw bad("REDUCE arguments are not a tuple");
        if (!isObj(fn, "global")) throw bad(`REDUCE on ${describe(fn)}`);
        stack.push(callGlobal(fn, args.items, env));
        break;
      }
      case 0x62: {
        // BUILD: instance state (e.g. a state dict's `_metadata`) carries no tensors; drop it.
        pop();
        const obj = top();
        if (!isObj(obj, "dict") && !isObj(obj, "tensor")) throw bad(`BUILD on ${describe(obj)}`);
        break;
      }
      case 0x51: {
        // BINPERSID: torch's ('storage', storage_type, key, location, numel)
        const pid = pop();
        if (!isObj(pid, "tuple") || pid.items[0] !== "storage" || pid.items.length !== 5) throw bad(`unsupported persistent id ${describe(pid)}`);
        const [, type, key, , numel] = pid.items;
        if (!isObj(type, "global") || type.module !== "torch" || typeof key !== "string" || typeof numel !== "number") {
          throw bad("malformed storage persistent id");
        }
        const st = STORAGE_TYPES[type.name];
        if (!st) throw bad(`unsupported storage type torch.${type.name}`);
        stack.push({ kind: "storage", dtype: st[0], elem: st[1], key, numel });
        break;
      }
      case 0x2e: // STOP
        if (stack.length !== 1) throw bad("pickle stack is not a single value at STOP");
        return pop();
      default:
        throw bad(`unsupported pickle opcode 0x${op.toString(16)} at byte ${p - 1}`);
    }
  }
}

function callGlobal(fn: { module: string; name: string }, args: PyValue[], env: UnpickleEnv): PyValue {
  const qual = `${fn.module}.${fn.name}`;
  switch (qual) {
    case "collections.OrderedDict": {
      const d: PyValue = { kind: "dict", entries: new Map() };
      if (args.length > 0) throw env.bad("OrderedDict with constructor arguments is not supported");
      return d;
    }
    case "torch._utils._rebuild_tensor_v2":
      return rebuildTensor(args, env);
    case "torch._utils._rebuild_parameter": {
      // nn.Parameter(data, requires_grad, hooks): the data is all we keep.
      const data = args[0];
      if (!isObj(data, "tensor")) throw env.bad("_rebuild_parameter without a tensor");
      return data;
    }
    default:
      throw env.bad(`unsupported pickled object ${qual}`);
  }
}

/** `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata])`. */
function rebuildTensor(args: PyValue[], env: UnpickleEnv): PyValue {
  const { bad } = env;
  const [storage, offset, size, stride] = args;
  if (!isObj(storage, "storage") || typeof offset !== "number") throw bad("malformed _rebuild_tensor_v2 arguments");
  const st = storage;
  const shape = intTuple(size, "size", bad);
  const strides = intTuple(stride, "stride", bad);
  if (shape.length !== strides.length) throw bad(`tensor size [${shape.join(", ")}] and stride [${strides.join(", ")}] differ in rank`);
  const numel = shape.reduce((a, b) => a * b, 1);
  if (numel > 0) {
    // Highest element the view touches must lie inside the storage.
    const last = offset + shape.reduce((acc, n, i) => acc + (n - 1) * strides[i]!, 0);
    if (offset < 0 || strides.some((s) => s < 0) || last >= st.numel) {
      throw bad(`tensor view (offset ${offset}, size [${shape.join(", ")}], stride [${strides.join(", ")}]) exceeds its storage of ${st.numel} elements`);
    }
  }
  const { elem } = st;
  const raw = env.storage(st.key);
  if (raw.length < st.numel * elem) throw bad(`storage "${st.key}" holds ${raw.length} bytes, expected ${st.numel * elem}`);
  let bytes = raw.subarray(0, st.numel * elem);
  if (env.bigEndian && elem > 1) bytes = byteSwap(bytes, elem);
  const all = toFloat32(bytes, st.dtype, `storage "${st.key}"`);

  const data = new Float32Array(numel);
  const idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < numel; i++) {
    let src = offset;
    for (let d = 0; d < shape.length; d++) src += idx[d]! * strides[d]!;
    data[i] = all[src]!;
    // Row-major odometer over the output indices.
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d]! < shape[d]!) break;
      idx[d] = 0;
    }
  }
  return { kind: "tensor", shape, data };
}

function intTuple(x: PyValue | undefined, what: string, bad: Bad): number[] {
  if (!isObj(x, "tuple") || !x.items.every((n) => typeof n === "number" && Number.isInteger(n))) throw bad(`tensor ${what} is not a tuple of integers`);
  return x.items as number[];
}

function byteSwap(b: Uint8Array, elem: number): Uint8Array {
  const out = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i += elem) for (let j = 0; j < elem; j++) out[i + j] = b[i + elem - 1 - j]!;
  return out;
}

function isObj<K extends PyObj["kind"]>(x: PyValue | undefined, kind: K): x is Extract<PyObj, { kind: K }> {
  return typeof x === "object" && x !== null && x.kind === kind;
}

function describe(x: PyValue): string {
  if (x === null) return "None";
  if (typeof x !== "object") return `a ${typeof x}`;
  if (x.kind === "global") return `${x.module}.${x.name}`;
  return `a ${x.kind}`;
}
