/**
 * Steering sweep (spec §2): evaluate a grid of layers × coefficients and pick the layer where
 * steering moves the trait score most while coherence stays at or above a floor. The grid runs as
 * few batched generate calls as the chunk size allows (one when it fits), each request carrying
 * its own steering. Finished cells can be kept in a record log so a re-run resumes.
 */
import type { Model } from "../engine/Model.js";
import type { Positions, SteeringSpec } from "../engine/steering.js";
import { PersonaError } from "../errors.js";
import { createHash } from "node:crypto";
import type { ModelInfo } from "../engine/types.js";
import type { Judge } from "../judge/types.js";
import type { LayerMatrix, PersonaVectorsMeta } from "../vectors/format.js";
import { row, updateVectorsMeta, writeVectors } from "../vectors/format.js";
import { loadVectorsFile } from "../vectors/load.js";
import { isReadOnlyVectors, userVectorsFile } from "../vectors/registry.js";
import { checkFits } from "../vectors/steer.js";
import { fingerprintModel, type RecordLog, RunDir } from "./rundir.js";
import {
  type EvalProgress,
  type EvalSample,
  type EvalSetting,
  type EvaluateCommonOptions,
  evaluateSettings,
  type ScoreStats,
} from "./evaluate.js";

export interface SweepCell {
  layer: number;
  coef: number;
  traitScore: ScoreStats;
  coherence: ScoreStats;
}

export interface SweepScores {
  traitScore: ScoreStats;
  coherence: ScoreStats;
}

/** A cell as kept in the record log: its scores and every rollout behind them. */
export interface SweepRecord extends SweepScores {
  samples: EvalSample[];
}

/** Per layer: the largest move of the trait score among cells that stay coherent. */
export interface LayerSummary {
  layer: number;
  /** (score − reference) · sign(coef), the move in the direction the coefficient asks for; null when no cell is coherent. */
  change: number | null;
  /** Coefficient of that move. */
  coef: number | null;
}

export interface BestLayer {
  bestLayer: number | null;
  bestCoef: number | null;
  layers: LayerSummary[];
}

export interface SweepResult extends BestLayer {
  grid: SweepCell[];
  /** Unsteered scores, or null when the sweep ran without a baseline. */
  baseline: SweepScores | null;
  coherenceFloor: number;
  positions: Positions;
  /** The prompt-state term's ratio, or null when the sweep steered with `vectors` alone. */
  promptStateRatio: number | null;
}

/**
 * A second vector per layer (usually `prompt_last`) added on the prompt's positions at each cell's
 * layer with `ratio` × its coefficient: a system prompt sets a persona as a state at the prompt, so
 * steering that state too moves the trait further at the same coherence (on the demo model it is
 * what brings every trait within issue 17's bounds; ratio 0.5 there).
 */
export interface PromptStateSteering {
  matrix: LayerMatrix;
  ratio: number;
}

export interface SweepProgress extends EvalProgress {
  /** Cells (baseline included) finished, of `cells`. */
  cellsDone: number;
  cells: number;
}

export interface SweepOptions extends Omit<EvaluateCommonOptions, "onProgress"> {
  /** One vector per layer (usually `response_avg`). */
  vectors: LayerMatrix;
  /** Steerable layers, 1..n_layer. */
  layers: readonly number[];
  coefs: readonly number[];
  /** Where the vector is added. Defaults to "response", the reference's steering type. */
  positions?: Positions;
  promptState?: PromptStateSteering;
  /** Least mean coherence for a cell to count when picking the layer. Defaults to 50. */
  coherenceFloor?: number;
  /** Evaluate unsteered once and measure changes against it (otherwise against 0). Defaults to true. */
  baseline?: boolean;
  /** Most rollouts per batched generate call; the grid is split by whole cells. Defaults to 4096. */
  chunkRequests?: number;
  /** Finished cells, keyed `baseline` or `LAYER:COEF`: they are not redone, new ones are appended. */
  records?: RecordLog<SweepRecord>;
  onProgress?(p: SweepProgress): void;
}

export const BASELINE_KEY = "baseline";
const DEFAULT_CHUNK_REQUESTS = 4096;

export function cellKey(layer: number, coef: number): string {
  return `${layer}:${coef}`;
}

/**
 * The layer whose largest trait move over coefficients, counting only cells with mean coherence
 * ≥ floor, is largest. A move is (score − reference) · sign(coef), so a negative coefficient counts
 * when it lowers the score. Ties go to the earlier layer and the smaller |coef|; no layer is best
 * when no coherent cell moved the score the way its coefficient asks (bestLayer null).
 */
export function pickBestLayer(grid: readonly SweepCell[], reference: number, coherenceFloor: number): BestLayer {
  const byLayer = new Map<number, LayerSummary>();
  for (const cell of grid) {
    const summary = byLayer.get(cell.layer) ?? { layer: cell.layer, change: null, coef: null };
    byLayer.set(cell.layer, summary);
    const { mean } = cell.traitScore;
    const coherence = cell.coherence.mean;
    if (cell.coef === 0 || mean === null || coherence === null || coherence < coherenceFloor) continue;
    const change = (mean - reference) * Math.sign(cell.coef) + 0; // + 0 turns −0 into 0
    const better =
      summary.change === null ||
      change > summary.change ||
      (change === summary.change && Math.abs(cell.coef) < Math.abs(summary.coef!));
    if (better) {
      summary.change = change;
      summary.coef = cell.coef;
    }
  }
  const layers = [...byLayer.values()].sort((a, b) => a.layer - b.layer);
  // A layer where steering never moved the score the asked way is no best layer.
  let best: LayerSummary | undefined;
  for (const l of layers) if (l.change !== null && l.change > 0 && (best === undefined || l.change > best.change!)) best = l;
  return { bestLayer: best?.layer ?? null, bestCoef: best?.coef ?? null, layers };
}

/** A cell's steering: coef × `vectors` at `layer` on `positions`, plus the prompt-state term if any. */
export function cellSteering(vectors: LayerMatrix, promptState: PromptStateSteering | undefined, layer: number, coef: number, positions: Positions = "response"): SteeringSpec[] {
  const specs: SteeringSpec[] = [{ vector: Float32Array.from(row(vectors, layer)), layer, coef, positions }];
  if (promptState) specs.push(promptStateSpec(promptState, layer, coef));
  return specs;
}

/** The prompt-state term at coefficient `coef`: ratio × coef × the matrix's row at `layer`, on the prompt. */
export function promptStateSpec(promptState: PromptStateSteering, layer: number, coef: number): SteeringSpec {
  return { vector: Float32Array.from(row(promptState.matrix, layer)), layer, coef: coef * promptState.ratio, positions: "prompt" };
}

export async function sweepSteering(model: Model, opts: SweepOptions): Promise<SweepResult> {
  const { vectors, promptState, records, onProgress, layers, coefs, positions = "response", coherenceFloor = 50, baseline: withBaseline = true, chunkRequests = DEFAULT_CHUNK_REQUESTS, ...common } =
    opts;
  if (layers.length === 0 || coefs.length === 0) throw new PersonaError("E_BAD_INPUT", "a sweep needs at least one layer and one coefficient");
  if (new Set(layers).size !== layers.length) throw new PersonaError("E_BAD_INPUT", "sweep layers repeat");
  if (new Set(coefs).size !== coefs.length) throw new PersonaError("E_BAD_INPUT", "sweep coefficients repeat");
  if (!Number.isInteger(chunkRequests) || chunkRequests < 1) throw new PersonaError("E_BAD_INPUT", `chunk size must be a positive integer, got ${chunkRequests}`);
  checkFits("the sweep's vectors", vectors, model.info);
  if (promptState) checkFits("the prompt-state vectors", promptState.matrix, model.info);
  if (promptState && !(Number.isFinite(promptState.ratio) && promptState.ratio !== 0)) {
    throw new PersonaError("E_BAD_INPUT", `the prompt-state ratio must be a finite non-zero number, got ${promptState.ratio}`);
  }

  // Coefficient 0 steers nothing: those cells are the baseline, evaluated once.
  const settings: EvalSetting[] = [];
  if (withBaseline || coefs.includes(0)) settings.push({ key: BASELINE_KEY });
  for (const layer of layers) {
    for (const coef of coefs) {
      if (coef === 0) continue;
      const steering = model.steering(cellSteering(vectors, promptState, layer, coef, positions));
      settings.push({ key: cellKey(layer, coef), steering });
    }
  }

  const done = new Map<string, SweepRecord>();
  for (const s of settings) {
    const r = records?.get(s.key);
    if (r) done.set(s.key, r);
  }
  const stored = new Set(done.keys());
  const perCell = (opts.questions ?? opts.trait.eval.questions).length * (opts.samplesPerQuestion ?? 10);
  const cellsPerChunk = Math.max(1, Math.floor(chunkRequests / perCell));
  const progress = (p: EvalProgress) => onProgress?.({ ...p, cellsDone: done.size, cells: settings.length });
  // One shard per chunk of whole cells, cut over the whole grid (a resumed run cuts where a fresh
  // one does, so batches and replies are the same); each cell is stored as soon as its chunk is in.
  await evaluateSettings(model, {
    ...common,
    settings,
    storedSetting: (key) => stored.has(key),
    shardRequests: cellsPerChunk * perCell,
    onProgress: progress,
    onSetting: async (r) => {
      const record: SweepRecord = { traitScore: r.traitScore, coherence: r.coherence, samples: r.samples };
      done.set(r.key, record);
      await records?.append(r.key, record);
    },
  });
  const total = settings.length * perCell;
  progress({ generated: total, judged: total, total });

  const scores = (key: string): SweepScores => {
    const r = done.get(key)!;
    return { traitScore: r.traitScore, coherence: r.coherence };
  };
  const grid: SweepCell[] = [];
  for (const layer of layers) {
    for (const coef of coefs) grid.push({ layer, coef, ...scores(coef === 0 ? BASELINE_KEY : cellKey(layer, coef)) });
  }
  const baseline = withBaseline ? scores(BASELINE_KEY) : null;
  const reference = baseline?.traitScore.mean ?? 0;
  return { grid, baseline, coherenceFloor, positions, promptStateRatio: promptState?.ratio ?? null, ...pickBestLayer(grid, reference, coherenceFloor) };
}

export interface SweepRunOptions extends Omit<SweepOptions, "records" | "vectors" | "promptState" | "judge"> {
  /** Run directory: created, or resumed when its configuration matches (see RunDir). */
  out: string;
  /** Set aside a run with another configuration instead of refusing. Defaults to false. */
  restart?: boolean;
  /** The vectors to steer with and which tensor they are (part of the run's configuration). */
  vectors: { matrix: LayerMatrix; tensor: string };
  promptState?: PromptStateSteering & { tensor: string };
  /** The judge's spec, part of the run's configuration. */
  judgeSpec: string;
  /** Opens the judge once the run directory exists (a judge cache lives in it). */
  openJudge(runDir: string): Promise<{ judge: Judge; close(): Promise<void> }>;
  /** Called before any work when an earlier run is resumed. */
  onResume?(runDir: string): void;
}

/**
 * A steering sweep in a run directory: the configuration (model fingerprint, trait, the vector's
 * values, judge and sampling) is hashed into run.json, finished cells are kept in cells.jsonl
 * and never redone, so a killed sweep resumes where it stopped.
 */
export async function runSweep(model: Model, opts: SweepRunOptions): Promise<{ result: SweepResult; judgeId: string; resumed: boolean }> {
  const { out, restart, vectors, promptState, judgeSpec, openJudge, onResume, ...sweep } = opts;
  // Results depend on the vectors' values, not on the file's metadata (which a sweep rewrites).
  const hash = ({ data }: LayerMatrix) => createHash("sha256").update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)).digest("hex").slice(0, 32);
  const config = {
    model: await fingerprintModel(model.info),
    trait: sweep.trait.name,
    vector: `${vectors.tensor}:${hash(vectors.matrix)}`,
    ...(promptState ? { prompt_state: `${promptState.tensor}:${hash(promptState.matrix)}×${promptState.ratio}` } : {}),
    judge: judgeSpec,
    questions: sweep.questions,
    samples: sweep.samplesPerQuestion,
    positions: sweep.positions,
    // Generation batches are cut at whole cells of this size, and inexact replies depend on the batch.
    chunk: sweep.chunkRequests ?? DEFAULT_CHUNK_REQUESTS,
    temperature: sweep.temperature,
    max_tokens: sweep.maxTokens,
    seed: sweep.seed,
  };
  const run = await RunDir.open(out, "sweep", config, { restart });
  if (run.resumed) onResume?.(out);
  const records = await run.records<SweepRecord>("cells.jsonl");
  try {
    const { judge, close } = await openJudge(out);
    try {
      const result = await sweepSteering(model, { ...sweep, judge, judgeSpec, vectors: vectors.matrix, ...(promptState ? { promptState } : {}), records });
      return { result, judgeId: judge.id, resumed: run.resumed };
    } finally {
      await close();
    }
  } finally {
    await records.close();
  }
}

/** Where a sweep's best layer (or a monitor's layer) went (see storeVectorsMeta). */
export type BestLayerStored =
  | { stored: "none"; why: "no-best-layer" | "pt-file" }
  | { stored: "file"; path: string }
  | { stored: "copy"; path: string };

/**
 * Records metadata (a best layer, a monitor layer) in a vectors file. A file shipped with the
 * model is never rewritten: the user's copy in the data directory gets it and then stands for the
 * trait. A reference .pt file cannot hold metadata.
 */
export async function storeVectorsMeta(vectorsPath: string, patch: Partial<PersonaVectorsMeta>, model: Pick<ModelInfo, "path" | "nLayer">, trait: string): Promise<BestLayerStored> {
  if (/\.pt$/i.test(vectorsPath)) return { stored: "none", why: "pt-file" };
  if (isReadOnlyVectors(vectorsPath, model.path)) {
    const v = await loadVectorsFile(vectorsPath, { nLayer: model.nLayer });
    const copy = await userVectorsFile(model.path, trait);
    await writeVectors(copy, { ...v, meta: { ...v.meta, ...patch } });
    return { stored: "copy", path: copy };
  }
  await updateVectorsMeta(vectorsPath, patch);
  return { stored: "file", path: vectorsPath };
}

/** Records a sweep's `bestLayer` as the vectors file's best_layer (see storeVectorsMeta). */
export async function storeBestLayer(vectorsPath: string, bestLayer: number | null, model: Pick<ModelInfo, "path" | "nLayer">, trait: string): Promise<BestLayerStored> {
  if (bestLayer === null) return { stored: "none", why: "no-best-layer" };
  return storeVectorsMeta(vectorsPath, { bestLayer }, model, trait);
}
