import { readFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { PersonaError } from "../../errors.js";
import { type LayerMatrix, type PersonaVectors, type VectorTensorName, type VectorsModelMeta, TENSOR_NAMES, isTensorName, validateVectors } from "../format.js";
import { toFloat32 } from "../safetensors.js";
import { type Bad, type PyValue, describe, isObj, unpickle } from "./pickle.js";
import { readZip } from "./zip.js";

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
  const env: TorchEnv = { storage, bigEndian: byteorder === "big", bad };
  const root = unpickle(zip.get(pklName)!, {
    reduce: (fn, args) => callGlobal(fn, args, env),
    persistentLoad: (pid) => persistentLoad(pid, bad),
    bad,
  });

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
// Tensor mapping: torch's pickled storages and tensor rebuilds → float32 arrays.

interface TorchEnv {
  storage: (key: string) => Uint8Array;
  bigEndian: boolean;
  bad: Bad;
}

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

/** torch's persistent id for a storage: ('storage', storage_type, key, location, numel). */
function persistentLoad(pid: PyValue, bad: Bad): PyValue {
  if (!isObj(pid, "tuple") || pid.items[0] !== "storage" || pid.items.length !== 5) throw bad(`unsupported persistent id ${describe(pid)}`);
  const [, type, key, , numel] = pid.items;
  if (!isObj(type, "global") || type.module !== "torch" || typeof key !== "string" || typeof numel !== "number") {
    throw bad("malformed storage persistent id");
  }
  const st = STORAGE_TYPES[type.name];
  if (!st) throw bad(`unsupported storage type torch.${type.name}`);
  return { kind: "storage", dtype: st[0], elem: st[1], key, numel };
}

function callGlobal(fn: { module: string; name: string }, args: PyValue[], env: TorchEnv): PyValue {
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
function rebuildTensor(args: PyValue[], env: TorchEnv): PyValue {
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
