/**
 * Reads vectors from whatever file a user has: our safetensors format, another tool's bare
 * safetensors tensors, the reference implementation's `.pt` files, or a llama.cpp / repeng
 * control-vector GGUF. Each becomes PersonaVectors (`[n_layer+1, n_embd]` per reduction).
 */
import { basename } from "node:path";
import { PersonaError } from "../errors.js";
import {
  type LayerMatrix,
  type PersonaVectors,
  type VectorTensorName,
  TENSOR_NAMES,
  isTensorName,
  presentTensors,
  validateVectors,
  vectorsFromSafetensors,
} from "./format.js";
import { importControlVector } from "./interop/cvec.js";
import { ptToVectors } from "./interop/torch.js";
import { readSafetensors } from "./safetensors.js";

/** What a file from another tool may not say about itself. */
export interface ForeignVectorsOptions {
  /** Trait name to record. Defaults to the file's own, else its name's prefix. */
  trait?: string;
  /** Which reduction a bare tensor holds. Defaults to its name when that is one of ours, else `response_avg`. */
  tensor?: VectorTensorName;
  /** The model's n_layer: places a single `[n_embd]` vector or a control vector's directions in a full `[n_layer+1, n_embd]` matrix. */
  nLayer?: number;
  /** Our layer (1..n_layer) of a single `[n_embd]` vector. */
  layer?: number;
}

/** Reads any supported vectors file by its extension (safetensors when unknown). */
export async function loadVectorsFile(path: string, opts: ForeignVectorsOptions = {}): Promise<PersonaVectors> {
  if (/\.pt$/i.test(path)) return ptToVectors(path, { trait: opts.trait });
  if (/\.gguf$/i.test(path)) return importControlVector(path, opts);
  return readForeignSafetensors(path, opts);
}

/**
 * A safetensors file in our format (it has a `trait` in its metadata), or one without our
 * metadata: tensors named after our reductions, or a single tensor of any name, either
 * `[n_layer+1, n_embd]` or one `[n_embd]` vector placed at `opts.layer`.
 */
export async function readForeignSafetensors(path: string, opts: ForeignVectorsOptions = {}): Promise<PersonaVectors> {
  const { tensors, metadata } = await readSafetensors(path);
  if (metadata.trait !== undefined) {
    const v = vectorsFromSafetensors(tensors, metadata, path);
    if (opts.trait !== undefined) v.meta.trait = opts.trait;
    return v;
  }
  const bad = (why: string): PersonaError => new PersonaError("E_BAD_FORMAT", `${path}: ${why}`);
  const entries = [...tensors];
  const ours = entries.filter(([n]) => isTensorName(n));
  const picked = ours.length > 0 ? ours : entries;
  if (picked.length === 0) throw bad("holds no tensor");
  if (ours.length === 0 && entries.length > 1) {
    throw bad(`holds ${entries.length} tensors (${entries.map(([n]) => n).join(", ")}) and none is named ${TENSOR_NAMES.join(", ")}; cannot tell which is the vector`);
  }
  const out: Partial<Record<VectorTensorName, LayerMatrix>> = {};
  for (const [name, t] of picked) {
    const reduction = isTensorName(name) ? name : (opts.tensor ?? "response_avg");
    out[reduction] = toMatrix(t.shape, t.data, `${path}: tensor "${name}"`, opts);
  }
  const v: PersonaVectors = {
    tensors: out,
    meta: { trait: opts.trait ?? stem(path), source: "import-safetensors", extra: { imported_from: basename(path), imported_tensors: picked.map(([n]) => n).join(",") } },
  };
  validateVectors(v, path);
  return v;
}

/** A `[n_layer+1, n_embd]` tensor as is; an `[n_embd]` vector placed at its layer in a zero matrix. */
function toMatrix(shape: readonly number[], data: Float32Array, label: string, opts: ForeignVectorsOptions): LayerMatrix {
  if (shape.length === 2 && shape[0]! >= 1 && shape[1]! >= 1) {
    if (opts.nLayer !== undefined && shape[0] !== opts.nLayer + 1) {
      throw new PersonaError("E_SHAPE", `${label} is [${shape.join(", ")}] but the model needs [${opts.nLayer + 1}, n_embd]`);
    }
    return { nLayerPlus1: shape[0]!, nEmbd: shape[1]!, data };
  }
  if (shape.length === 1 && shape[0]! >= 1) {
    const { layer, nLayer } = opts;
    if (layer === undefined || nLayer === undefined) {
      throw new PersonaError(
        "E_BAD_INPUT",
        `${label} is a single [${shape[0]}] vector with no layer; give its layer explicitly (e.g. --steer FILE:20:4, or --layer 20 --n-layer 28 for import)`,
      );
    }
    if (!Number.isInteger(layer) || layer < 1 || layer > nLayer) throw new PersonaError("E_SHAPE", `layer ${layer} is outside 1..${nLayer}`);
    const m: LayerMatrix = { nLayerPlus1: nLayer + 1, nEmbd: shape[0]!, data: new Float32Array((nLayer + 1) * shape[0]!) };
    m.data.set(data, layer * shape[0]!);
    return m;
  }
  throw new PersonaError("E_BAD_FORMAT", `${label} has shape [${shape.join(", ")}]; expected [n_layer+1, n_embd] or [n_embd]`);
}

/**
 * Joins vectors of one trait read from several files (e.g. the reference's three `.pt` files)
 * into one; the same reduction twice, or differing shapes, is an error.
 */
export function mergeVectors(parts: readonly { path: string; vectors: PersonaVectors }[], trait?: string): PersonaVectors {
  const first = parts[0];
  if (!first) throw new PersonaError("E_BAD_INPUT", "no vectors to merge");
  const tensors: Partial<Record<VectorTensorName, LayerMatrix>> = {};
  const from = new Map<VectorTensorName, string>();
  for (const { path, vectors } of parts) {
    for (const name of presentTensors(vectors)) {
      const prev = from.get(name);
      if (prev !== undefined) throw new PersonaError("E_BAD_INPUT", `${name} is in both ${prev} and ${path}; import each reduction once`);
      from.set(name, path);
      tensors[name] = vectors.tensors[name]!;
    }
  }
  const traits = [...new Set(parts.map((p) => p.vectors.meta.trait))];
  if (trait === undefined && traits.length > 1) {
    throw new PersonaError("E_BAD_INPUT", `the files hold different traits (${traits.join(", ")}); pass --trait to name the result`);
  }
  const v: PersonaVectors = {
    tensors,
    meta: {
      ...first.vectors.meta,
      trait: trait ?? traits[0]!,
      extra: { ...first.vectors.meta.extra, imported_from: parts.map((p) => basename(p.path)).join(",") },
    },
  };
  validateVectors(v, parts.map((p) => p.path).join(" + "));
  return v;
}

/** File name without directory and extension, and without a reference `_<reduction>_diff` suffix. */
function stem(path: string): string {
  return basename(path)
    .replace(/\.[^.]+$/, "")
    .replace(new RegExp(`_(${TENSOR_NAMES.join("|")})(_diff)?$`), "");
}
