/**
 * Steering specs and their validation. A spec names a layer in the paper's convention
 * (0 = embeddings, L = residual after block L−1); steering at L edits the output of block L−1,
 * so layer 0 cannot be steered. Resolution checks everything native code would assert on.
 */
import { PersonaError } from "../errors.js";

/** Which token positions an intervention touches (spec §2). */
export type Positions = "all" | "prompt" | "response";

export interface SteeringSpec {
  /** Direction, `n_embd` floats. Not normalised for `add`. */
  vector: Float32Array;
  /** Layer in 1..n_layer. */
  layer: number;
  /**
   * Multiplier for `add`; for `ablate`, the fraction of the component removed (1 = all); for
   * `cap`, the threshold the projection x·v̂ is clamped to.
   */
  coef: number;
  /** Defaults to "all". `response` follows the reference: the last prompt token and every generated token. */
  positions?: Positions;
  /**
   * `add` adds coef·v; `ablate` removes coef·(x·v̂)v̂; `cap` (activation capping) clamps x·v̂ to
   * at most coef (`bound` "max") or at least coef ("min"), touching only rows that cross it.
   * Defaults to "add".
   */
  mode?: SteeringMode;
  /** For `cap`: which side of the threshold is kept. Defaults to "max" (at most coef). */
  bound?: "max" | "min";
  /**
   * For `ablate`: the projection the ablation keeps, x − coef·(x·v̂ − mean)·v̂. 0 (the default)
   * is zero-ablation; the base model's mean projection removes the variance along v̂ and keeps
   * its mean. "data": to be measured on the training data by whoever trains (`finetune` does),
   * so it is refused here.
   */
  mean?: number | "data";
  /**
   * For `ablate`: the projection kept on the last prompt token instead of `mean` (where a
   * prompt_last direction's base mean sits far from the other tokens').
   */
  lastPromptMean?: number;
}

export type SteeringMode = "add" | "ablate" | "cap";

/** Row classes inside one forward pass. */
export const ROW_PROMPT = 0;
export const ROW_LAST_PROMPT = 1;
export const ROW_RESPONSE = 2;
export type RowClass = typeof ROW_PROMPT | typeof ROW_LAST_PROMPT | typeof ROW_RESPONSE;

/** The RowClass bit set of positions "all". */
export const ALL_POSITIONS = 0b111;

const POSITION_MASKS: Record<Positions, number> = {
  all: ALL_POSITIONS,
  prompt: (1 << ROW_PROMPT) | (1 << ROW_LAST_PROMPT),
  response: (1 << ROW_LAST_PROMPT) | (1 << ROW_RESPONSE),
};

export interface SteeringOp {
  readonly layer: number;
  readonly kind: "add" | "ablate" | "capMax" | "capMin";
  /** add: coef·v; ablate and caps: v̂ (unit). */
  readonly vec: Float32Array;
  /** add: the multiplier; ablate: the fraction removed; caps: the threshold. */
  readonly coef: number;
  /** ablate: the projection kept (0 = zero-ablation). */
  readonly mean?: number;
  /** ablate: the projection kept on the last prompt token (default: `mean`). */
  readonly lastPromptMean?: number;
  /** Bit set of RowClass values the op applies to. */
  readonly mask: number;
}

declare const resolvedBrand: unique symbol;
/** Validated steering, the only form the engine accepts. */
export type ResolvedSteering = readonly SteeringOp[] & { readonly [resolvedBrand]: true };

export const NO_STEERING = [] as unknown as ResolvedSteering;

/** Both steerings at once (each was validated on its own). */
export function concatSteering(a: ResolvedSteering, b: ResolvedSteering): ResolvedSteering {
  return [...a, ...b] as unknown as ResolvedSteering;
}

export function resolveSteering(
  specs: readonly SteeringSpec[],
  model: { nLayer: number; nEmbd: number },
): ResolvedSteering {
  const ops: SteeringOp[] = specs.map((s, i) => {
    const where = specs.length > 1 ? ` (steering #${i + 1})` : "";
    if (!Number.isInteger(s.layer)) throw new PersonaError("E_SHAPE", `layer must be an integer, got ${s.layer}${where}`);
    if (s.layer === 0) {
      throw new PersonaError(
        "E_SHAPE",
        `layer 0 is the token embeddings and cannot be steered; steering at layer L edits the output of block L-1, so use 1..${model.nLayer}${where}`,
      );
    }
    if (s.layer < 1 || s.layer > model.nLayer) {
      throw new PersonaError("E_SHAPE", `layer ${s.layer} is out of range 1..${model.nLayer}${where}`);
    }
    if (!(s.vector instanceof Float32Array) || s.vector.length !== model.nEmbd) {
      throw new PersonaError(
        "E_SHAPE",
        `steering vector has ${s.vector?.length ?? 0} values but the model's n_embd is ${model.nEmbd}${where}`,
      );
    }
    if (!Number.isFinite(s.coef)) throw new PersonaError("E_BAD_STEER_ARG", `coefficient must be a finite number${where}`);
    const positions = s.positions ?? "all";
    if (!(positions in POSITION_MASKS)) {
      throw new PersonaError("E_BAD_STEER_ARG", `positions must be all, prompt or response, got ${positions}${where}`);
    }
    let norm2 = 0;
    for (const x of s.vector) {
      if (!Number.isFinite(x)) throw new PersonaError("E_BAD_FORMAT", `steering vector contains a non-finite value${where}`);
      norm2 += x * x;
    }
    const mode = s.mode ?? "add";
    if (mode !== "add" && mode !== "ablate" && mode !== "cap") throw new PersonaError("E_BAD_STEER_ARG", `mode must be add, ablate or cap, got ${String(mode)}${where}`);
    const bound = s.bound ?? "max";
    if (bound !== "max" && bound !== "min") throw new PersonaError("E_BAD_STEER_ARG", `cap bound must be max or min, got ${String(bound)}${where}`);
    const mean = s.mean ?? 0;
    if (mean !== 0 && mode !== "ablate") throw new PersonaError("E_BAD_STEER_ARG", `a kept mean applies to ablate only, not ${mode}${where}`);
    if (mean === "data") {
      throw new PersonaError(
        "E_BAD_STEER_ARG",
        `ablate-mean keeps the base model's mean projection over the training data, which only persona finetune measures (in the library, give the mean as a number)${where}`,
      );
    }
    if (!Number.isFinite(mean)) throw new PersonaError("E_BAD_STEER_ARG", `the kept mean must be a finite number${where}`);
    const last = s.lastPromptMean;
    if (last !== undefined && (mode !== "ablate" || !Number.isFinite(last))) throw new PersonaError("E_BAD_STEER_ARG", `a kept last-prompt mean must be a finite number on an ablation${where}`);
    const mask = POSITION_MASKS[positions];
    if (mode === "add") return { layer: s.layer, kind: "add", vec: s.vector.map((x) => x * s.coef), coef: s.coef, mask };
    if (norm2 === 0) throw new PersonaError("E_BAD_STEER_ARG", `cannot ${mode} along a zero vector${where}`);
    const inv = 1 / Math.sqrt(norm2);
    const vec = s.vector.map((x) => x * inv);
    if (mode === "ablate") return { layer: s.layer, kind: "ablate", vec, coef: s.coef, mask, ...(mean !== 0 ? { mean } : {}), ...(last !== undefined ? { lastPromptMean: last } : {}) };
    return { layer: s.layer, kind: bound === "max" ? "capMax" : "capMin", vec, coef: s.coef, mask };
  });
  return ops as unknown as ResolvedSteering;
}

/** Applies the ops for one row in place; returns whether anything changed. */
export function applyOpsToRow(ops: readonly SteeringOp[], layer: number, rowClass: RowClass, row: Float32Array): boolean {
  let changed = false;
  for (const op of ops) {
    if (op.layer !== layer || (op.mask & (1 << rowClass)) === 0) continue;
    const v = op.vec;
    if (op.kind === "add") {
      for (let j = 0; j < row.length; j++) row[j]! += v[j]!;
      changed = true;
      continue;
    }
    let d = 0;
    for (let j = 0; j < row.length; j++) d += row[j]! * v[j]!;
    // ablate removes coef of the component's distance from the kept mean; a cap moves the row back
    // onto the threshold only when it crossed it.
    const s = op.kind === "ablate" ? (d - keptMean(op, rowClass)) * op.coef : op.kind === "capMax" ? Math.max(0, d - op.coef) : Math.min(0, d - op.coef);
    if (s === 0) continue;
    for (let j = 0; j < row.length; j++) row[j]! -= s * v[j]!;
    changed = true;
  }
  return changed;
}

/** The projection an ablation keeps on a row of this class. */
export function keptMean(op: Pick<SteeringOp, "mean" | "lastPromptMean">, rowClass: RowClass): number {
  return rowClass === ROW_LAST_PROMPT && op.lastPromptMean !== undefined ? op.lastPromptMean : (op.mean ?? 0);
}

/** A resolved op as plain JSON: how steering travels to another process (a queue worker). */
export interface SteeringOpJson {
  layer: number;
  kind: SteeringOp["kind"];
  vec: number[];
  coef: number;
  mask: number;
  mean?: number;
  lastPromptMean?: number;
}

export function steeringToJson(s: ResolvedSteering): SteeringOpJson[] {
  return s.map((op) => ({ layer: op.layer, kind: op.kind, vec: Array.from(op.vec), coef: op.coef, mask: op.mask, ...keptMeans(op) }));
}

/** Back from JSON, checked again against the model that will run it (float32 values round-trip exactly). */
export function steeringFromJson(ops: readonly SteeringOpJson[], model: { nLayer: number; nEmbd: number }): ResolvedSteering {
  const kinds: readonly string[] = ["add", "ablate", "capMax", "capMin"];
  return ops.map((op) => {
    const ok =
      Number.isInteger(op.layer) && op.layer >= 1 && op.layer <= model.nLayer &&
      kinds.includes(op.kind) && Number.isFinite(op.coef) && Number.isInteger(op.mask) && op.mask >= 1 && op.mask <= ALL_POSITIONS &&
      Array.isArray(op.vec) && op.vec.length === model.nEmbd && op.vec.every((x) => Number.isFinite(x)) &&
      [op.mean, op.lastPromptMean].every((m) => m === undefined || (op.kind === "ablate" && Number.isFinite(m)));
    if (!ok) throw new PersonaError("E_BAD_STEER_ARG", `steering op for layer ${op.layer} does not fit this model (${model.nLayer} layers, n_embd ${model.nEmbd})`);
    return { layer: op.layer, kind: op.kind, vec: Float32Array.from(op.vec), coef: op.coef, mask: op.mask, ...keptMeans(op) };
  }) as unknown as ResolvedSteering;
}

/** An op's kept means, only those it has. */
export function keptMeans(op: { mean?: number; lastPromptMean?: number }): { mean?: number; lastPromptMean?: number } {
  return { ...(op.mean !== undefined ? { mean: op.mean } : {}), ...(op.lastPromptMean !== undefined ? { lastPromptMean: op.lastPromptMean } : {}) };
}
