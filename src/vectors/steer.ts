/**
 * Turns parsed `--steer` arguments (or the server's steering objects) into validated engine
 * steering: loads each vectors file or trait name, picks the tensor row for the layer (the stored
 * best layer when none is given) and checks it fits the model.
 */
import { existsSync } from "node:fs";
import type { Positions, ResolvedSteering, SteeringMode, SteeringSpec } from "../engine/steering.js";
import type { ModelInfo } from "../engine/types.js";
import { PersonaError } from "../errors.js";
import { type LayerMatrix, type PersonaVectors, type PersonaVectorsMeta, type VectorTensorName, defaultTensor, parseSpanRef, parseVectorRef, row, selectTensor } from "./format.js";
import { loadVectorsFile } from "./load.js";
import { findTraitVectors, listTraitVectors } from "./registry.js";
import { type SpanMatrix, spanLayerEmpty, spanRows } from "./span.js";

/** Steering that names its vector by file or trait, as `--steer` and the server's requests do. */
export interface SteeringRef {
  /** `FILE.safetensors[#TENSOR]`, a reference `.pt`, or a trait name registered for the model. */
  source: string;
  /** undefined = the best layer recorded in the vectors file. */
  layer: number | undefined;
  coef: number;
  positions: Positions;
  mode: SteeringMode;
  /** For `cap`: keep the projection at most (`max`, the default) or at least (`min`) coef. */
  bound?: "max" | "min";
  /** For `ablate`: keep the base model's mean projections over the training data (`finetune` measures them). */
  mean?: "data";
}

export interface LoadedVector {
  path: string;
  /** The reduction used: the one named with `#TENSOR`, else `response_avg`, else the one the file has. */
  tensor: VectorTensorName;
  matrix: LayerMatrix;
  meta: PersonaVectorsMeta;
  /** Every tensor the file holds (all of `matrix`'s shape), so another reduction needs no second read. */
  file: PersonaVectors;
}

/**
 * Loads `FILE[#TENSOR]` (any file `loadVectorsFile` reads), or a trait name registered for the
 * model. `layer` places a bare `[n_embd]` vector, which has no layer of its own.
 */
export async function loadVectorSource(source: string, model: Pick<ModelInfo, "path" | "nLayer" | "nEmbd">, layer?: number): Promise<LoadedVector> {
  const { path: file, tensor } = parseVectorRef(source);
  const resolved = resolveVectorsPath(file, model);
  const v = await loadVectorsFile(resolved, { nLayer: model.nLayer, ...(layer !== undefined ? { layer } : {}) });
  const matrix = selectTensor(v, tensor);
  checkFits(resolved, matrix, model);
  return { path: resolved, tensor: tensor ?? defaultTensor(v), matrix, meta: v.meta, file: v };
}

/** Refuses vectors (a file, or what a pipeline was given) whose shape is not [n_layer+1, n_embd] of the model. */
export function checkFits(what: string, m: { nLayerPlus1: number; nEmbd: number }, model: Pick<ModelInfo, "nLayer" | "nEmbd">): void {
  if (m.nLayerPlus1 !== model.nLayer + 1 || m.nEmbd !== model.nEmbd) {
    throw new PersonaError("E_SHAPE", `${what}: [${m.nLayerPlus1}, ${m.nEmbd}] vectors, but the model needs [${model.nLayer + 1}, ${model.nEmbd}]`);
  }
}

/** A vectors file as given, else the file registered for the model under that trait name. */
function resolveVectorsPath(file: string, model: Pick<ModelInfo, "path">): string {
  let resolved = file;
  if (!existsSync(file)) {
    const registered = findTraitVectors(model.path, file);
    if (!registered) {
      const known = [...new Set(listTraitVectors(model.path).map((r) => r.trait))];
      throw new PersonaError(
        "E_NOT_FOUND",
        `"${file}" is neither a vectors file nor a trait with vectors for this model` +
          (known.length ? ` (registered: ${known.join(", ")})` : ""),
      );
    }
    resolved = registered.path;
  }
  return resolved;
}

/**
 * `FILE#TENSOR_span` ablated at one layer: one ablation per basis row (the rows are orthonormal,
 * so one after another they remove the whole span). Only `ablate` takes a span.
 */
async function spanSpecs(
  a: SteeringRef,
  span: { path: string; tensor: VectorTensorName },
  model: Pick<ModelInfo, "path" | "nLayer" | "nEmbd">,
  loaded: Map<string, Promise<PersonaVectors>>,
): Promise<SteeringSpec[]> {
  if (a.mode !== "ablate") throw new PersonaError("E_BAD_STEER_ARG", `${a.source} is a subspace: it can only be ablated (…:LAYER:1:all:ablate), not ${a.mode === "cap" ? `cap${a.bound === "min" ? "-min" : ""}` : "added"}`);
  const resolved = resolveVectorsPath(span.path, model);
  // A layer range A-B is one ref per layer: the file is read and validated once.
  if (!loaded.has(resolved)) loaded.set(resolved, loadVectorsFile(resolved, { nLayer: model.nLayer }));
  const v = await loaded.get(resolved)!;
  const sp = v.spans?.[span.tensor];
  if (!sp) throw new PersonaError("E_NOT_FOUND", `${resolved} holds no ${span.tensor}_span; write one with persona extract … --span K`);
  checkFits(resolved, sp, model);
  const layer = a.layer ?? v.meta.bestLayer;
  if (layer === undefined || layer < 1 || layer > model.nLayer) throw new PersonaError("E_SHAPE", `a span is ablated at a layer in 1..${model.nLayer}, got ${layer ?? "none"}`);
  return spanAblations(sp, layer, { coef: a.coef, positions: a.positions, ...(a.mean ? { mean: a.mean } : {}) }, `${resolved}'s ${span.tensor}_span`);
}

/** A span ablated at one layer as engine steering: one ablation per basis row. */
export function spanAblations(
  sp: SpanMatrix,
  layer: number,
  how: Pick<SteeringSpec, "coef" | "positions" | "mean">,
  name = "the span",
): SteeringSpec[] {
  if (spanLayerEmpty(sp, layer)) throw new PersonaError("E_BAD_STEER_ARG", `${name} is empty at layer ${layer}`);
  return spanRows(sp, layer).map((r) => ({ vector: Float32Array.from(r), layer, mode: "ablate", ...how }));
}

export async function steeringSpecs(args: readonly SteeringRef[], model: Pick<ModelInfo, "path" | "nLayer" | "nEmbd">): Promise<SteeringSpec[]> {
  const specs: SteeringSpec[] = [];
  const spanFiles = new Map<string, Promise<PersonaVectors>>();
  for (const a of args) {
    const span = parseSpanRef(a.source);
    if (span) {
      specs.push(...(await spanSpecs(a, span, model, spanFiles)));
      continue;
    }
    const v = await loadVectorSource(a.source, model, a.layer);
    const layer = a.layer ?? v.meta.bestLayer;
    if (layer === undefined) {
      throw new PersonaError("E_BAD_STEER_ARG", `${v.path} has no best layer in its metadata; give one, e.g. ${a.source}:${Math.ceil(model.nLayer / 2)}:${a.coef}, or store one with \`persona sweep\``);
    }
    if (layer < 1 || layer > model.nLayer) {
      throw new PersonaError("E_SHAPE", `layer ${layer} is out of range 1..${model.nLayer} (layer 0, the embeddings, cannot be steered)`);
    }
    specs.push({ vector: Float32Array.from(row(v.matrix, layer)), layer, coef: a.coef, positions: a.positions, mode: a.mode, ...(a.bound ? { bound: a.bound } : {}), ...(a.mean ? { mean: a.mean } : {}) });
  }
  return specs;
}

export async function loadSteering(
  args: readonly SteeringRef[],
  model: { info: ModelInfo; steering(specs: readonly SteeringSpec[]): ResolvedSteering },
): Promise<ResolvedSteering> {
  return model.steering(await steeringSpecs(args, model.info));
}
