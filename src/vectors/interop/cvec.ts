import { PersonaError } from "../../errors.js";
import { GgufWriter } from "../../engine/gguf/writer.js";
import { DEFAULT_TENSOR, type PersonaVectors, type VectorTensorName, row, selectTensor } from "../format.js";
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
  /** Which tensor of the vectors file to take the rows from. Defaults to `response_avg`. */
  tensor?: VectorTensorName;
  /** Multiplier applied to every exported row. Defaults to 1. */
  coef?: number;
  /** `controlvector.model_hint` (llama.cpp does not check it). Defaults to the vectors' model arch, else its name, else "unknown". */
  modelHint?: string;
}

export async function exportControlVector(out: string, v: PersonaVectors, opts: CvecExportOptions): Promise<void> {
  const tensor = opts.tensor ?? DEFAULT_TENSOR;
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
