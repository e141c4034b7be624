import { PersonaError } from "../errors.js";
import { type LayerMatrix, row } from "./format.js";

/**
 * Pure vector math on Float32Arrays. Sums run in float64 so that 4096-wide dot products and
 * means over thousands of samples do not lose precision.
 */

export type Vec = ArrayLike<number>;

function sameLength(a: Vec, b: Vec, what: string): void {
  if (a.length !== b.length) throw new PersonaError("E_SHAPE", `${what}: vector lengths differ (${a.length} vs ${b.length})`);
}

export function dot(a: Vec, b: Vec): number {
  sameLength(a, b, "dot");
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** Euclidean (L2) norm. */
export function norm(v: Vec): number {
  return Math.sqrt(dot(v, v));
}

/** Cosine similarity; NaN when either vector is zero (the angle is undefined). */
export function cosine(a: Vec, b: Vec): number {
  const d = dot(a, b);
  const n = norm(a) * norm(b);
  return n === 0 ? NaN : Math.max(-1, Math.min(1, d / n));
}

/** Scalar projection of activation `a` on direction `v`: a·v/‖v‖ (spec §2, monitoring). */
export function project(a: Vec, v: Vec): number {
  const n = norm(v);
  if (n === 0) throw new PersonaError("E_BAD_INPUT", "cannot project onto a zero vector");
  return dot(a, v) / n;
}

/** v/‖v‖ as a new Float32Array. */
export function unit(v: Vec): Float32Array {
  const n = norm(v);
  if (n === 0) throw new PersonaError("E_BAD_INPUT", "cannot normalise a zero vector");
  return scale(v, 1 / n);
}

/** c·v as a new Float32Array. */
export function scale(v: Vec, c: number): Float32Array {
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = v[i]! * c;
  return out;
}

/** L2 norm of every row (layer) of a layer matrix. */
export function layerNorms(m: LayerMatrix): number[] {
  const out: number[] = [];
  for (let l = 0; l < m.nLayerPlus1; l++) out.push(norm(row(m, l)));
  return out;
}

/** Cosine similarity of the two matrices' rows, layer by layer. */
export function cosinePerLayer(a: LayerMatrix, b: LayerMatrix): number[] {
  if (a.nLayerPlus1 !== b.nLayerPlus1 || a.nEmbd !== b.nEmbd) {
    throw new PersonaError("E_SHAPE", `shapes differ: [${a.nLayerPlus1}, ${a.nEmbd}] vs [${b.nLayerPlus1}, ${b.nEmbd}]`);
  }
  const out: number[] = [];
  for (let l = 0; l < a.nLayerPlus1; l++) out.push(cosine(row(a, l), row(b, l)));
  return out;
}

/**
 * Mean of equally sized float vectors (e.g. one sample's whole `[n_layer+1, n_embd]` activation
 * set), accumulated as a float64 sum so memory stays constant however many samples are added.
 */
export class RunningMean {
  readonly size: number;
  private readonly sum: Float64Array;
  private n = 0;

  constructor(size: number) {
    if (!Number.isSafeInteger(size) || size <= 0) throw new PersonaError("E_BAD_INPUT", `RunningMean size must be a positive integer, got ${size}`);
    this.size = size;
    this.sum = new Float64Array(size);
  }

  /** Number of samples added so far. */
  get count(): number {
    return this.n;
  }

  add(sample: Vec): void {
    if (sample.length !== this.size) {
      throw new PersonaError("E_SHAPE", `RunningMean expects samples of length ${this.size}, got ${sample.length}`);
    }
    for (let i = 0; i < this.size; i++) this.sum[i]! += sample[i]!;
    this.n++;
  }

  /** The running sum (a copy) and count, to send elsewhere and `merge` there. */
  state(): { sum: Float64Array; n: number } {
    return { sum: this.sum.slice(), n: this.n };
  }

  /** Adds another mean's samples by their sum and count: merged in a fixed order, the same bits on every machine. */
  merge(sum: Float64Array, n: number): void {
    if (sum.length !== this.size) throw new PersonaError("E_SHAPE", `RunningMean expects sums of length ${this.size}, got ${sum.length}`);
    for (let i = 0; i < this.size; i++) this.sum[i]! += sum[i]!;
    this.n += n;
  }

  mean(): Float32Array {
    return Float32Array.from(this.mean64());
  }

  /** The mean before rounding to float32. */
  mean64(): Float64Array {
    if (this.n === 0) throw new PersonaError("E_BAD_INPUT", "RunningMean has no samples");
    return this.sum.map((s) => s / this.n);
  }
}

/** mean(pos) − mean(neg), the persona vector before any normalisation (spec §2, extraction). */
export function meanDiff(pos: RunningMean, neg: RunningMean): Float32Array {
  if (pos.size !== neg.size) throw new PersonaError("E_SHAPE", `meanDiff: sizes differ (${pos.size} vs ${neg.size})`);
  // Subtract before rounding to float32: the difference of two nearby means is the signal.
  const b = neg.mean64();
  return Float32Array.from(pos.mean64(), (x, i) => x - b[i]!);
}
