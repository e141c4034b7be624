import { basename } from "node:path";
import { PersonaError } from "../../errors.js";
import { getNumber, getString, readGguf, readTensorF32 } from "../../engine/gguf/reader.js";
import { GgufWriter } from "../../engine/gguf/writer.js";
import { type PersonaVectors, type VectorTensorName, defaultTensor, isTensorName, row, selectTensor, validateVectors } from "../format.js";
import { scale } from "../math.js";

/**
 * Export to a llama.cpp control vector GGUF, the file `--control-vector` and
 * `common_control_vector_load_one` read: architecture "controlvector" and one 1-D F32 tensor
 * `direction.k` per steered block k. Our layer L (residual after block L−1) becomes
 * `direction.(L-1)` (spec §2). llama.cpp rejects `direction.0` and never steers block 0, so only
 * L ≥ 2 can be exported.
 */

export interface CvecExportOptions {
  /** Layers to export, in our convention (2..n_layer). */
  layers: readonly number[];
  /** Which tensor of the vectors file to take the rows from. Defaults to `response_avg`, else the one the file has. */
  tensor?: VectorTensorName;
  /** Multiplier applied to every exported row. Defaults to 1. */
  coef?: number;
  /** `controlvector.model_hint` (llama.cpp does not check it). Defaults to the vectors' model arch, else its name, else "unknown". */
  modelHint?: string;
}

export async function exportControlVector(out: string, v: PersonaVectors, opts: CvecExportOptions): Promise<void> {
  const tensor = opts.tensor ?? defaultTensor(v);
  const m = selectTensor(v, tensor);
  const coef = opts.coef ?? 1;
  if (!Number.isFinite(coef)) throw new PersonaError("E_BAD_INPUT", `coefficient ${coef} is not a finite number`);
  if (opts.layers.length === 0) throw new PersonaError("E_BAD_INPUT", "no layer given to export");
  const nLayer = m.nLayerPlus1 - 1;
  const seen = new Set<number>();
  for (const layer of opts.layers) {
    if (!Number.isInteger(layer) || layer < 2 || layer > nLayer) {
      throw new PersonaError(
        "E_SHAPE",
        `layer ${layer} cannot be exported: a control vector steers layers 2..${nLayer} (layer 0 is the embeddings and llama.cpp does not steer block 0's output, layer 1)`,
      );
    }
    if (seen.has(layer)) throw new PersonaError("E_BAD_INPUT", `layer ${layer} is given twice`);
    seen.add(layer);
  }

  const w = new GgufWriter();
  w.setString("general.architecture", "controlvector");
  w.setString("controlvector.model_hint", opts.modelHint ?? v.meta.model?.arch ?? v.meta.model?.name ?? "unknown");
  // Count of direction tensors, as llama.cpp's cvector-generator and repeng write it.
  w.setI32("controlvector.layer_count", opts.layers.length);
  // Provenance only; llama.cpp ignores keys it does not know.
  w.setString("persona.trait", v.meta.trait);
  w.setString("persona.tensor", tensor);
  w.setF32("persona.coef", coef);
  for (const layer of [...opts.layers].sort((a, b) => a - b)) {
    w.addTensor(`direction.${layer - 1}`, [m.nEmbd], scale(row(m, layer), coef));
  }
  await w.write(out);
}

export interface CvecImportOptions {
  /** Trait name. Defaults to the file's `persona.trait`, else its file name. */
  trait?: string;
  /** Reduction to store the rows as. Defaults to the file's `persona.tensor`, else `response_avg`. */
  tensor?: VectorTensorName;
  /** The model's n_layer. Defaults to the highest direction's layer (rows above it would be zero anyway). */
  nLayer?: number;
}

/**
 * The inverse of `exportControlVector`: reads a llama.cpp / repeng control vector GGUF
 * (`direction.k`, 1-D, F32/F16) and places each direction at our layer k+1 of a zero
 * `[n_layer+1, n_embd]` matrix. Values are kept as stored (an export's coefficient stays in them).
 */
export async function importControlVector(path: string, opts: CvecImportOptions = {}): Promise<PersonaVectors> {
  const g = await readGguf(path);
  const bad = (why: string): PersonaError => new PersonaError("E_BAD_FORMAT", `${path}: not a control vector: ${why}`);
  const arch = getString(g, "general.architecture");
  if (arch !== undefined && arch !== "controlvector") throw bad(`general.architecture is "${arch}"`);
  const directions: { k: number; name: string }[] = [];
  let nEmbd = 0;
  for (const t of g.tensors) {
    const m = /^direction\.(\d+)$/.exec(t.name);
    if (!m) throw bad(`unexpected tensor "${t.name}" (expected direction.<k>)`);
    const k = Number(m[1]);
    if (k === 0) throw bad("direction.0 is not a valid layer (llama.cpp refuses it too: block 0's output is never steered)");
    if (t.ne.length !== 1) throw bad(`${t.name} is not 1-D (ne [${t.ne.join(", ")}])`);
    if (nEmbd !== 0 && t.ne[0] !== nEmbd) throw bad(`${t.name} has ${t.ne[0]} values, others ${nEmbd}`);
    nEmbd = t.ne[0]!;
    directions.push({ k, name: t.name });
  }
  if (directions.length === 0) throw bad("no direction tensors");
  const maxLayer = Math.max(...directions.map((d) => d.k + 1));
  const nLayer = opts.nLayer ?? maxLayer;
  if (maxLayer > nLayer) throw new PersonaError("E_SHAPE", `${path} steers layer ${maxLayer} (direction.${maxLayer - 1}) but the model has ${nLayer} layers`);
  const storedTensor = getString(g, "persona.tensor");
  const tensor = opts.tensor ?? (storedTensor !== undefined && isTensorName(storedTensor) ? storedTensor : "response_avg");
  const data = new Float32Array((nLayer + 1) * nEmbd);
  for (const d of directions) data.set(await readTensorF32(g, d.name), (d.k + 1) * nEmbd);
  const extra: Record<string, string> = { imported_from: basename(path), layers: directions.map((d) => d.k + 1).sort((a, b) => a - b).join(",") };
  const hint = getString(g, "controlvector.model_hint");
  const coef = getNumber(g, "persona.coef");
  if (coef !== undefined) extra.coef = String(coef);
  const v: PersonaVectors = {
    tensors: { [tensor]: { nLayerPlus1: nLayer + 1, nEmbd, data } },
    meta: {
      trait: opts.trait ?? getString(g, "persona.trait") ?? basename(path).replace(/\.gguf$/i, ""),
      source: "import-cvec",
      model: { name: hint ?? "unknown", ...(hint !== undefined ? { arch: hint } : {}), nLayer, nEmbd },
      extra,
    },
  };
  validateVectors(v, path);
  return v;
}
