/**
 * Per-sample residual reductions, accumulated row by row as forward passes stream through the
 * hook callback: mean over prompt tokens, the last prompt token, mean over response tokens.
 * Sums are float64 so long sequences lose nothing; one accumulator per in-flight sample, so
 * memory does not grow with the number of samples.
 *
 * Two kinds: `CaptureAccumulator` keeps whole residual rows of the captured layers (only those:
 * capturing 1 layer of 80 allocates 1 row per reduction), `ProjectionAccumulator` keeps only dot
 * products with given unit vectors ("probes"), never a residual row.
 */
import { PersonaError } from "../errors.js";
import { ROW_LAST_PROMPT, ROW_RESPONSE, type RowClass } from "./steering.js";

/** The three reductions of one sample, each `[layers.length, n_embd]` row-major. */
export interface SampleActivations {
  /** The captured layers, ascending; row i of each reduction is layer `layers[i]`. All layers = 0..n_layer. */
  layers: readonly number[];
  promptAvg: Float32Array;
  promptLast: Float32Array;
  responseAvg: Float32Array;
  nPromptTokens: number;
  nResponseTokens: number;
}

export const REDUCTIONS = ["response_avg", "prompt_avg", "prompt_last"] as const;
export type Reduction = (typeof REDUCTIONS)[number];

/** Something the hook callback feeds residual rows to; `mask[l]` says whether it wants layer l. */
export interface RowSink {
  readonly mask: Uint8Array;
  add(layer: number, rowClass: RowClass, row: Float32Array): void;
}

/** Ascending, de-duplicated layers checked against 0..nLayers-1 (nLayers = n_layer + 1). */
export function checkLayers(nLayers: number, layers: readonly number[]): number[] {
  for (const l of layers) {
    if (!Number.isInteger(l) || l < 0 || l >= nLayers) throw new PersonaError("E_SHAPE", `layer ${l} is outside 0..${nLayers - 1}`);
  }
  return [...new Set(layers)].sort((a, b) => a - b);
}

export class CaptureAccumulator implements RowSink {
  readonly mask: Uint8Array;
  readonly layers: readonly number[];
  /** Row of each layer in the sums, or -1. */
  private readonly slot: Int32Array;
  private readonly promptSum: Float64Array;
  private readonly responseSum: Float64Array;
  private readonly last: Float32Array;
  private promptCount = 0;
  private responseCount = 0;

  /** `layers` undefined = every layer 0..nLayers-1. */
  constructor(
    nLayers: number,
    readonly nEmbd: number,
    layers?: readonly number[],
  ) {
    this.layers = layers ? checkLayers(nLayers, layers) : Array.from({ length: nLayers }, (_, l) => l);
    this.mask = new Uint8Array(nLayers);
    this.slot = new Int32Array(nLayers).fill(-1);
    this.layers.forEach((l, i) => {
      this.mask[l] = 1;
      this.slot[l] = i;
    });
    const size = this.layers.length * nEmbd;
    this.promptSum = new Float64Array(size);
    this.responseSum = new Float64Array(size);
    this.last = new Float32Array(size);
  }

  add(layer: number, rowClass: RowClass, row: Float32Array): void {
    const i = this.slot[layer]!;
    if (i < 0) return;
    const off = i * this.nEmbd;
    const n = this.nEmbd;
    // Every captured layer sees the same rows; count them once, on the first.
    const counts = i === 0;
    if (rowClass === ROW_RESPONSE) {
      const s = this.responseSum;
      for (let j = 0; j < n; j++) s[off + j]! += row[j]!;
      if (counts) this.responseCount++;
      return;
    }
    const s = this.promptSum;
    for (let j = 0; j < n; j++) s[off + j]! += row[j]!;
    if (counts) this.promptCount++;
    if (rowClass === ROW_LAST_PROMPT) this.last.set(row, off);
  }

  finish(): SampleActivations {
    const mean = (sum: Float64Array, count: number) => {
      const out = new Float32Array(sum.length);
      if (count > 0) for (let j = 0; j < sum.length; j++) out[j] = sum[j]! / count;
      return out;
    };
    return {
      layers: this.layers,
      promptAvg: mean(this.promptSum, this.promptCount),
      promptLast: this.last,
      responseAvg: mean(this.responseSum, this.responseCount),
      nPromptTokens: this.promptCount,
      nResponseTokens: this.responseCount,
    };
  }
}

/** Projections of one sample, one value per probe (in the probes' order). */
export interface SampleProjections {
  /** The last prompt token's projection: known before any token is generated (monitoring). */
  promptLast: Float64Array;
  promptAvg: Float64Array;
  /** Mean over response tokens (forced ones, or generated ones fed back through the model). */
  responseAvg: Float64Array;
  /**
   * `[nResponseTokens, nProbes]` row-major, when asked for: row t is response token t. A
   * generation stopped by its token limit has no row for its last token (it never went through
   * the model).
   */
  perToken?: Float32Array;
  nPromptTokens: number;
  nResponseTokens: number;
}

/** Validated probes, the engine's form: unit vectors, `nProbes × n_embd` row-major, and their layers. */
export interface ResolvedProbes {
  readonly layers: Int32Array;
  readonly vectors: Float32Array;
  readonly perToken: boolean;
}

export class ProjectionAccumulator implements RowSink {
  readonly mask: Uint8Array;
  /** Probe indices per layer. */
  private readonly byLayer: number[][];
  private readonly nProbes: number;
  private readonly promptSum: Float64Array;
  private readonly responseSum: Float64Array;
  private readonly last: Float64Array;
  private readonly promptCount: Int32Array;
  private readonly responseCount: Int32Array;
  private perToken: Float32Array | null;

  constructor(
    nLayers: number,
    private readonly nEmbd: number,
    private readonly probes: ResolvedProbes,
  ) {
    const n = probes.layers.length;
    this.nProbes = n;
    this.mask = new Uint8Array(nLayers);
    this.byLayer = Array.from({ length: nLayers }, () => []);
    probes.layers.forEach((l, k) => {
      this.mask[l] = 1;
      this.byLayer[l]!.push(k);
    });
    this.promptSum = new Float64Array(n);
    this.responseSum = new Float64Array(n);
    this.last = new Float64Array(n);
    this.promptCount = new Int32Array(n);
    this.responseCount = new Int32Array(n);
    this.perToken = probes.perToken ? new Float32Array(16 * n) : null;
  }

  add(layer: number, rowClass: RowClass, row: Float32Array): void {
    const n = this.nEmbd;
    const v = this.probes.vectors;
    for (const k of this.byLayer[layer]!) {
      const off = k * n;
      let d = 0;
      for (let j = 0; j < n; j++) d += row[j]! * v[off + j]!;
      if (rowClass === ROW_RESPONSE) {
        this.responseSum[k]! += d;
        const t = this.responseCount[k]!++;
        if (this.perToken) this.storeToken(t, k, d);
        continue;
      }
      this.promptSum[k]! += d;
      this.promptCount[k]!++;
      if (rowClass === ROW_LAST_PROMPT) this.last[k] = d;
    }
  }

  private storeToken(t: number, k: number, d: number): void {
    let buf = this.perToken!;
    if ((t + 1) * this.nProbes > buf.length) {
      const grown = new Float32Array(buf.length * 2);
      grown.set(buf);
      this.perToken = buf = grown;
    }
    buf[t * this.nProbes + k] = d;
  }

  get perTokenEnabled(): boolean {
    return this.perToken !== null;
  }

  /** The last prompt token's projections so far (final once the prompt went through). */
  promptLastNow(): Float64Array {
    return this.last.slice();
  }

  /** Response token `t`'s projections, one per probe (per-token probes only). */
  tokenRow(t: number): Float32Array {
    return this.perToken!.slice(t * this.nProbes, (t + 1) * this.nProbes);
  }

  finish(): SampleProjections {
    const mean = (sum: Float64Array, counts: Int32Array) => sum.map((s, k) => (counts[k]! > 0 ? s / counts[k]! : 0));
    const nResponse = this.nProbes > 0 ? this.responseCount[0]! : 0;
    const out: SampleProjections = {
      promptLast: this.last,
      promptAvg: mean(this.promptSum, this.promptCount),
      responseAvg: mean(this.responseSum, this.responseCount),
      nPromptTokens: this.nProbes > 0 ? this.promptCount[0]! : 0,
      nResponseTokens: nResponse,
    };
    if (this.perToken) out.perToken = this.perToken.slice(0, nResponse * this.nProbes);
    return out;
  }
}

/** Project layer `layer`'s residual (0 = embeddings, l = after block l−1) onto `vector`'s direction. */
export interface ProbeSpec {
  layer: number;
  /** Any non-zero length; the engine projects onto `vector / ‖vector‖`. */
  vector: Float32Array;
}

/** Checks probes against the model (layer range, width, finite non-zero vectors) and normalises them. */
export function resolveProbes(specs: readonly ProbeSpec[], model: { nLayer: number; nEmbd: number }, perToken = false): ResolvedProbes {
  if (specs.length === 0) throw new PersonaError("E_BAD_INPUT", "projection needs at least one probe (layer and vector)");
  const n = model.nEmbd;
  const layers = new Int32Array(specs.length);
  const vectors = new Float32Array(specs.length * n);
  specs.forEach((s, k) => {
    const where = specs.length > 1 ? ` (probe #${k + 1})` : "";
    if (!Number.isInteger(s.layer) || s.layer < 0 || s.layer > model.nLayer) {
      throw new PersonaError("E_SHAPE", `probe layer ${s.layer} is outside 0..${model.nLayer}${where}`);
    }
    if (!(s.vector instanceof Float32Array) || s.vector.length !== n) {
      throw new PersonaError("E_SHAPE", `probe vector has ${s.vector?.length ?? 0} values but the model's n_embd is ${n}${where}`);
    }
    let norm2 = 0;
    for (const x of s.vector) {
      if (!Number.isFinite(x)) throw new PersonaError("E_BAD_FORMAT", `probe vector contains a non-finite value${where}`);
      norm2 += x * x;
    }
    if (norm2 === 0) throw new PersonaError("E_BAD_INPUT", `cannot project onto a zero vector${where}`);
    const inv = 1 / Math.sqrt(norm2);
    layers[k] = s.layer;
    for (let j = 0; j < n; j++) vectors[k * n + j] = s.vector[j]! * inv;
  });
  return { layers, vectors, perToken };
}
