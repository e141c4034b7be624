import { readFileSync } from "node:fs";
import { z } from "zod";
import { PersonaError } from "../errors.js";
import { type FloatTensor, type SafetensorsContent, readSafetensors, writeSafetensors } from "./safetensors.js";
import { type SpanMatrix, orthonormalityError, spanLayerEmpty, spanRows } from "./span.js";

/**
 * The persona vectors file (spec §3): a safetensors file with float32 tensors `response_avg`,
 * `prompt_avg`, `prompt_last` (at least one; the reference saves each in its own file), each
 * `[n_layer+1, n_embd]` where row l is layer l
 * (l = 0: token embeddings, l ≥ 1: residual after block l−1), plus string metadata. Structured
 * metadata is stored as JSON strings with snake_case fields so Python tools can read it too.
 * Optionally a span per reduction, `{name}_span` `[n_layer+1, k, n_embd]`: per layer an orthonormal
 * basis of the trait's subspace (`persona extract --span K`), which CAFT ablates whole.
 */

/** One row per layer, row-major: row l starts at `l * nEmbd`. */
export interface LayerMatrix {
  nLayerPlus1: number;
  nEmbd: number;
  data: Float32Array;
}

export const TENSOR_NAMES = ["response_avg", "prompt_avg", "prompt_last"] as const;
export type VectorTensorName = (typeof TENSOR_NAMES)[number];
/** The tensor used when none is named and the file has it; otherwise the first the file has. */
export const DEFAULT_TENSOR: VectorTensorName = "response_avg";

export interface VectorsModelMeta {
  /** Model name or file name, e.g. "Qwen2.5-7B-Instruct". */
  name: string;
  /** `general.architecture` of the GGUF, e.g. "qwen2". */
  arch?: string;
  nLayer: number;
  nEmbd: number;
  /** Hash of the model file the vectors came from, as `algo:hex`. */
  fileHash?: string;
}

/** Where the vectors came from; other strings are allowed for future importers. */
export type VectorsSource = "extract" | "import-pt" | (string & {});

export interface PersonaVectorsMeta {
  trait: string;
  source: VectorsSource;
  model?: VectorsModelMeta;
  /** Samples kept and dropped by the filter during extraction. */
  counts?: { kept: number; dropped: number };
  /** Judge that scored the rollouts, e.g. "openai:gpt-4.1-mini". */
  judge?: string;
  /** Filter thresholds used (spec §2: trait ≥ 50 / < 50, coherence ≥ 50). */
  thresholds?: { trait: number; coherence: number };
  /** ISO 8601 time of writing. Defaults to now when written. */
  createdAt?: string;
  /** `persona-vectors@x.y.z`. Defaults to this package's version when written. */
  toolVersion?: string;
  /** Layer picked by a steering sweep. */
  bestLayer?: number;
  /**
   * Where `persona monitor` found the last-prompt-token projection most predictive of the trait:
   * the tensor it projected on, the layer and its Pearson r. `persona shift` projects there by default.
   */
  monitorLayer?: { tensor: VectorTensorName; layer: number; pearsonR: number };
  /** Metadata keys this version does not interpret; kept so a rewrite loses nothing. */
  extra?: Record<string, string>;
}

export interface PersonaVectors {
  /** At least one; all of the same shape. */
  tensors: Partial<Record<VectorTensorName, LayerMatrix>>;
  /** Trait subspaces, stored as `{name}_span`; the same n_layer+1 and n_embd as the tensors. */
  spans?: Partial<Record<VectorTensorName, SpanMatrix>>;
  meta: PersonaVectorsMeta;
}

const SPAN_SUFFIX = "_span";

/** `prompt_last_span` → `prompt_last`; undefined for any other name. */
export function spanTensorOf(name: string): VectorTensorName | undefined {
  const base = name.endsWith(SPAN_SUFFIX) ? name.slice(0, -SPAN_SUFFIX.length) : "";
  return isTensorName(base) ? base : undefined;
}

/** Builds a LayerMatrix, zero-filled when `data` is omitted. */
export function layerMatrix(nLayerPlus1: number, nEmbd: number, data?: Float32Array): LayerMatrix {
  if (!Number.isSafeInteger(nLayerPlus1) || nLayerPlus1 < 1 || !Number.isSafeInteger(nEmbd) || nEmbd < 1) {
    throw new PersonaError("E_SHAPE", `invalid layer matrix shape [${nLayerPlus1}, ${nEmbd}]`);
  }
  const d = data ?? new Float32Array(nLayerPlus1 * nEmbd);
  if (d.length !== nLayerPlus1 * nEmbd) {
    throw new PersonaError("E_SHAPE", `layer matrix [${nLayerPlus1}, ${nEmbd}] needs ${nLayerPlus1 * nEmbd} values, got ${d.length}`);
  }
  return { nLayerPlus1, nEmbd, data: d };
}

/** Row `layer` as a view (no copy) into the matrix. */
export function row(m: LayerMatrix, layer: number): Float32Array {
  if (!Number.isInteger(layer) || layer < 0 || layer >= m.nLayerPlus1) {
    throw new PersonaError("E_SHAPE", `layer ${layer} is outside 0..${m.nLayerPlus1 - 1}`);
  }
  return m.data.subarray(layer * m.nEmbd, (layer + 1) * m.nEmbd);
}

/** The named tensor (by default `response_avg`, else whichever the file has), or E_NOT_FOUND listing the tensors present. */
export function selectTensor(v: PersonaVectors, name?: VectorTensorName): LayerMatrix {
  const m = v.tensors[name ?? defaultTensor(v)];
  if (!m) throw new PersonaError("E_NOT_FOUND", `vectors have no tensor "${name}" (present: ${presentTensors(v).join(", ")})`);
  return m;
}

/** `response_avg` when present, otherwise the first tensor the file has. */
export function defaultTensor(v: PersonaVectors): VectorTensorName {
  return v.tensors[DEFAULT_TENSOR] ? DEFAULT_TENSOR : (presentTensors(v)[0] ?? DEFAULT_TENSOR);
}

/** `[n_layer+1, n_embd]` shared by every tensor of the file. */
export function vectorsShape(v: PersonaVectors): { nLayerPlus1: number; nEmbd: number } {
  const { nLayerPlus1, nEmbd } = selectTensor(v);
  return { nLayerPlus1, nEmbd };
}

export function presentTensors(v: PersonaVectors): VectorTensorName[] {
  return TENSOR_NAMES.filter((n) => v.tensors[n] !== undefined);
}

export function isTensorName(s: string): s is VectorTensorName {
  return (TENSOR_NAMES as readonly string[]).includes(s);
}

/**
 * Splits a vector reference `FILE.safetensors[#TENSOR]` (as used by `--steer` and the CLI) into
 * the path and the tensor name; without `#TENSOR` the tensor is undefined (see `selectTensor`).
 */
export function parseVectorRef(ref: string): { path: string; tensor?: VectorTensorName } {
  const hash = ref.lastIndexOf("#");
  // A '#' inside a directory name is part of the path, not a tensor selector.
  if (hash < 0 || /[\\/]/.test(ref.slice(hash + 1))) return { path: ref };
  const tensor = ref.slice(hash + 1);
  const path = ref.slice(0, hash);
  if (!path) throw new PersonaError("E_BAD_INPUT", `vector reference "${ref}" has no file before '#'`);
  if (spanTensorOf(tensor)) {
    throw new PersonaError("E_BAD_INPUT", `"${ref}" names a subspace (${tensor}), which only ablation takes: --steer ${ref}:1-N:1:all:ablate`);
  }
  if (!isTensorName(tensor)) {
    throw new PersonaError("E_BAD_INPUT", `unknown tensor "${tensor}" in "${ref}"; expected one of ${TENSOR_NAMES.join(", ")}`);
  }
  return { path, tensor };
}

/** `FILE#prompt_last_span` → the file and the reduction whose span it names; undefined for any other reference. */
export function parseSpanRef(ref: string): { path: string; tensor: VectorTensorName } | undefined {
  const hash = ref.lastIndexOf("#");
  const tensor = hash > 0 ? spanTensorOf(ref.slice(hash + 1)) : undefined;
  return tensor ? { path: ref.slice(0, hash), tensor } : undefined;
}

/** Reads a persona vectors file: our tensors plus our metadata (see `readForeignSafetensors` for other tools' files). */
export async function readVectors(path: string): Promise<PersonaVectors> {
  const { tensors, metadata } = await readSafetensors(path);
  return vectorsFromSafetensors(tensors, metadata, path);
}

/** Builds PersonaVectors from a parsed safetensors file in our format; E_BAD_FORMAT otherwise. */
export function vectorsFromSafetensors(tensors: SafetensorsContent["tensors"], metadata: Record<string, string>, path: string): PersonaVectors {
  const bad = (why: string): PersonaError => new PersonaError("E_BAD_FORMAT", `${path}: not a persona vectors file: ${why}`);
  const out: Partial<Record<VectorTensorName, LayerMatrix>> = {};
  const spans: Partial<Record<VectorTensorName, SpanMatrix>> = {};
  for (const [name, t] of tensors) {
    const spanOf = spanTensorOf(name);
    if (spanOf) {
      if (t.shape.length !== 3 || t.shape.some((d) => d < 1)) throw bad(`tensor "${name}" has shape [${t.shape.join(", ")}], expected [n_layer+1, k, n_embd]`);
      spans[spanOf] = { nLayerPlus1: t.shape[0]!, k: t.shape[1]!, nEmbd: t.shape[2]!, data: t.data };
      continue;
    }
    if (!isTensorName(name)) throw bad(`unexpected tensor "${name}" (allowed: ${TENSOR_NAMES.join(", ")}, and each with ${SPAN_SUFFIX})`);
    if (t.shape.length !== 2 || t.shape[0]! < 1 || t.shape[1]! < 1) {
      throw bad(`tensor "${name}" has shape [${t.shape.join(", ")}], expected [n_layer+1, n_embd]`);
    }
    out[name] = { nLayerPlus1: t.shape[0]!, nEmbd: t.shape[1]!, data: t.data };
  }
  if (presentTensors({ tensors: out, meta: { trait: "", source: "" } }).length === 0) {
    throw bad(`no tensor named ${TENSOR_NAMES.join(", ")} (found: ${[...tensors.keys()].join(", ") || "none"})`);
  }
  const v: PersonaVectors = { tensors: out, ...(Object.keys(spans).length > 0 && { spans }), meta: decodeMeta(metadata, path) };
  validateVectors(v, path);
  return v;
}

/** Validates then writes atomically; fills `createdAt` and `toolVersion` when absent. */
export async function writeVectors(path: string, v: PersonaVectors): Promise<void> {
  validateVectors(v, path);
  const tensors = new Map<string, FloatTensor>();
  for (const name of presentTensors(v)) {
    const m = v.tensors[name]!;
    tensors.set(name, { shape: [m.nLayerPlus1, m.nEmbd], data: m.data });
  }
  for (const [name, sp] of spanEntries(v)) tensors.set(`${name}${SPAN_SUFFIX}`, { shape: [sp.nLayerPlus1, sp.k, sp.nEmbd], data: sp.data });
  const meta: PersonaVectorsMeta = { ...v.meta, createdAt: v.meta.createdAt ?? new Date().toISOString(), toolVersion: v.meta.toolVersion ?? toolVersion() };
  await writeSafetensors(path, tensors, encodeMeta(meta));
}

/**
 * Merges `patch` into the file's metadata and rewrites it atomically (tensors unchanged). A key
 * set to `undefined` in the patch is removed. Returns the new metadata.
 */
export async function updateVectorsMeta(path: string, patch: Partial<PersonaVectorsMeta>): Promise<PersonaVectorsMeta> {
  const v = await readVectors(path);
  const meta: PersonaVectorsMeta = { ...v.meta, ...patch };
  await writeVectors(path, { ...v, meta });
  return meta;
}

/**
 * Checks that every tensor has the same `[n_layer+1, n_embd]` shape, that data lengths match,
 * and that the model metadata (if any) agrees with the shape. Throws E_BAD_FORMAT.
 */
export function validateVectors(v: PersonaVectors, label: string): void {
  const bad = (why: string): PersonaError => new PersonaError("E_BAD_FORMAT", `${label}: ${why}`);
  const names = presentTensors(v);
  if (names.length === 0) throw bad(`no tensor (expected one or more of ${TENSOR_NAMES.join(", ")})`);
  const shapes = names.map((n) => `${n} [${v.tensors[n]!.nLayerPlus1}, ${v.tensors[n]!.nEmbd}]`);
  const first = v.tensors[names[0]!]!;
  for (const n of names) {
    const m = v.tensors[n]!;
    if (m.nLayerPlus1 !== first.nLayerPlus1 || m.nEmbd !== first.nEmbd) throw bad(`tensor shapes differ: ${shapes.join(", ")}`);
    if (m.data.length !== m.nLayerPlus1 * m.nEmbd) throw bad(`tensor "${n}" [${m.nLayerPlus1}, ${m.nEmbd}] holds ${m.data.length} values`);
  }
  for (const [name, sp] of spanEntries(v)) {
    if (sp.nLayerPlus1 !== first.nLayerPlus1 || sp.nEmbd !== first.nEmbd || sp.k > sp.nEmbd || sp.data.length !== sp.nLayerPlus1 * sp.k * sp.nEmbd) {
      throw bad(`span ${name}${SPAN_SUFFIX} [${sp.nLayerPlus1}, ${sp.k}, ${sp.nEmbd}] (${sp.data.length} values) does not fit the tensors [${first.nLayerPlus1}, ${first.nEmbd}] (k ≤ n_embd)`);
    }
    for (let l = 0; l < sp.nLayerPlus1; l++) {
      const err = spanLayerEmpty(sp, l) ? 0 : orthonormalityError(spanRows(sp, l));
      // Ablating a non-orthonormal basis one direction after another would leave part of the span.
      if (!(err <= 1e-4)) throw bad(`span ${name}${SPAN_SUFFIX} at layer ${l} is not an orthonormal basis (off by ${err.toExponential(1)})`);
    }
  }
  if (!v.meta.trait) throw bad("metadata has no trait");
  const model = v.meta.model;
  if (model && (model.nLayer + 1 !== first.nLayerPlus1 || model.nEmbd !== first.nEmbd)) {
    throw bad(`metadata says n_layer=${model.nLayer}, n_embd=${model.nEmbd} but the tensors are [${first.nLayerPlus1}, ${first.nEmbd}] (expected [n_layer+1, n_embd])`);
  }
  for (const [key, layer] of [["best_layer", v.meta.bestLayer], ["monitor_layer", v.meta.monitorLayer?.layer]] as const) {
    if (layer !== undefined && !(Number.isInteger(layer) && layer >= 0 && layer < first.nLayerPlus1)) throw bad(`${key} ${layer} is outside 0..${first.nLayerPlus1 - 1}`);
  }
}

/** The spans a file holds, by reduction. */
export function spanEntries(v: Pick<PersonaVectors, "spans">): [VectorTensorName, SpanMatrix][] {
  return TENSOR_NAMES.flatMap((n) => (v.spans?.[n] ? [[n, v.spans[n]] as [VectorTensorName, SpanMatrix]] : []));
}

/** `persona-vectors@<version>` of this package. */
export function toolVersion(): string {
  cachedVersion ??= `persona-vectors@${(JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf-8")) as { version: string }).version}`;
  return cachedVersion;
}
let cachedVersion: string | undefined;

const ModelJson = z.object({
  name: z.string(),
  arch: z.string().optional(),
  n_layer: z.number().int().nonnegative(),
  n_embd: z.number().int().positive(),
  file_hash: z.string().optional(),
});
const CountsJson = z.object({ kept: z.number().int().nonnegative(), dropped: z.number().int().nonnegative() });
const ThresholdsJson = z.object({ trait: z.number(), coherence: z.number() });
const MonitorLayerJson = z.object({ tensor: z.enum(TENSOR_NAMES), layer: z.number().int().nonnegative(), pearson_r: z.number() });

/** Metadata keys this module owns; any other key lands in `extra`. */
const KNOWN_KEYS = ["trait", "source", "model", "counts", "judge", "thresholds", "created_at", "tool_version", "best_layer", "monitor_layer"];

function encodeMeta(m: PersonaVectorsMeta): Record<string, string> {
  const out: Record<string, string> = { ...m.extra, trait: m.trait, source: m.source };
  if (m.model) {
    const { name, arch, nLayer, nEmbd, fileHash } = m.model;
    out.model = JSON.stringify({ name, arch, n_layer: nLayer, n_embd: nEmbd, file_hash: fileHash });
  }
  if (m.counts) out.counts = JSON.stringify({ kept: m.counts.kept, dropped: m.counts.dropped });
  if (m.judge !== undefined) out.judge = m.judge;
  if (m.thresholds) out.thresholds = JSON.stringify({ trait: m.thresholds.trait, coherence: m.thresholds.coherence });
  if (m.createdAt !== undefined) out.created_at = m.createdAt;
  if (m.toolVersion !== undefined) out.tool_version = m.toolVersion;
  if (m.bestLayer !== undefined) out.best_layer = String(m.bestLayer);
  if (m.monitorLayer) out.monitor_layer = JSON.stringify({ tensor: m.monitorLayer.tensor, layer: m.monitorLayer.layer, pearson_r: m.monitorLayer.pearsonR });
  return out;
}

function decodeMeta(md: Record<string, string>, label: string): PersonaVectorsMeta {
  const bad = (key: string, why: string): PersonaError =>
    new PersonaError("E_BAD_FORMAT", `${label}: metadata "${key}" is invalid: ${why}`);
  const json = <T>(key: string, schema: z.ZodType<T>): T | undefined => {
    const raw = md[key];
    if (raw === undefined) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      throw bad(key, "not JSON");
    }
    const r = schema.safeParse(parsed);
    if (!r.success) throw bad(key, r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; "));
    return r.data;
  };
  if (md.trait === undefined) throw new PersonaError("E_BAD_FORMAT", `${label}: metadata has no "trait"`);
  const meta: PersonaVectorsMeta = { trait: md.trait, source: md.source ?? "unknown" };
  const model = json("model", ModelJson);
  if (model) {
    meta.model = { name: model.name, nLayer: model.n_layer, nEmbd: model.n_embd };
    if (model.arch !== undefined) meta.model.arch = model.arch;
    if (model.file_hash !== undefined) meta.model.fileHash = model.file_hash;
  }
  const counts = json("counts", CountsJson);
  if (counts) meta.counts = counts;
  if (md.judge !== undefined) meta.judge = md.judge;
  const thresholds = json("thresholds", ThresholdsJson);
  if (thresholds) meta.thresholds = thresholds;
  if (md.created_at !== undefined) meta.createdAt = md.created_at;
  if (md.tool_version !== undefined) meta.toolVersion = md.tool_version;
  if (md.best_layer !== undefined) {
    if (!/^\d+$/.test(md.best_layer)) throw bad("best_layer", `"${md.best_layer}" is not a layer index`);
    meta.bestLayer = Number(md.best_layer);
  }
  const monitor = json("monitor_layer", MonitorLayerJson);
  if (monitor) meta.monitorLayer = { tensor: monitor.tensor, layer: monitor.layer, pearsonR: monitor.pearson_r };
  const extra = Object.fromEntries(Object.entries(md).filter(([k]) => !KNOWN_KEYS.includes(k)));
  if (Object.keys(extra).length > 0) meta.extra = extra;
  return meta;
}
