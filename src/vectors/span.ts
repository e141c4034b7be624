/**
 * Trait subspaces ("spans"): per layer, an orthonormal basis of the k directions that hold the most
 * of the extraction pairs' activation differences (pos − neg, uncentered, so the persona vector
 * itself lies almost inside). CAFT ablates the whole span instead of one direction: on the demo
 * model the finetune otherwise learns the trait along the directions left next to the one ablated.
 */
import { PersonaError } from "../errors.js";
import { dot } from "./math.js";

/**
 * Most directions per layer a span may hold (`persona extract --span K`): each is one ablation op
 * per layer, in inference and inside the training graph, whose size grows with the ops.
 */
export const MAX_SPAN_K = 256;

/** `[n_layer+1, k, n_embd]` row-major: layer l's k unit rows; a layer with no differences (layer 0 of prompt_last) has k zero rows. */
export interface SpanMatrix {
  nLayerPlus1: number;
  k: number;
  nEmbd: number;
  data: Float32Array;
}

/** Layer l's k rows, each `[n_embd]` (views into the span's data). */
export function spanRows(s: SpanMatrix, layer: number): Float32Array[] {
  return Array.from({ length: s.k }, (_, j) => s.data.subarray((layer * s.k + j) * s.nEmbd, (layer * s.k + j + 1) * s.nEmbd));
}

/** Whether a layer holds no basis (all zero rows): nothing to ablate there. */
export function spanLayerEmpty(s: SpanMatrix, layer: number): boolean {
  return spanRows(s, layer).every((r) => r.every((x) => x === 0));
}

/** Largest |⟨r_i, r_j⟩ − δ_ij| over a layer's rows: 0 for an orthonormal basis. */
export function orthonormalityError(rows: readonly ArrayLike<number>[]): number {
  let worst = 0;
  for (let i = 0; i < rows.length; i++) for (let j = i; j < rows.length; j++) worst = Math.max(worst, Math.abs(dot(rows[i]!, rows[j]!) - (i === j ? 1 : 0)));
  return worst;
}

/**
 * Eigenvalues (descending) and unit eigenvectors of a symmetric n×n matrix (row-major), by cyclic
 * Jacobi rotations: exact to rounding, for the small matrices the span needs.
 */
export function symmetricEigen(matrix: Float64Array, n: number): { values: number[]; vectors: Float64Array[] } {
  const a = Float64Array.from(matrix);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  const scale = Math.max(1e-300, dot(a, a));
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q]! ** 2;
    if (off <= 1e-26 * scale) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]!;
        if (apq === 0) continue;
        const theta = (a[q * n + q]! - a[p * n + p]!) / (2 * apq);
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const [kp, kq] = [a[k * n + p]!, a[k * n + q]!];
          a[k * n + p] = c * kp - s * kq;
          a[k * n + q] = s * kp + c * kq;
        }
        for (let k = 0; k < n; k++) {
          const [pk, qk] = [a[p * n + k]!, a[q * n + k]!];
          a[p * n + k] = c * pk - s * qk;
          a[q * n + k] = s * pk + c * qk;
        }
        for (let k = 0; k < n; k++) {
          const [kp, kq] = [v[k * n + p]!, v[k * n + q]!];
          v[k * n + p] = c * kp - s * kq;
          v[k * n + q] = s * kp + c * kq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => a[j * n + j]! - a[i * n + i]!);
  return { values: order.map((i) => a[i * n + i]!), vectors: order.map((i) => Float64Array.from({ length: n }, (_, k) => v[k * n + i]!)) };
}

/** Gram-Schmidt (twice, for float64 stability) in place; a column that vanishes is replaced by `fresh()` and redone. */
function orthonormalise(cols: Float64Array[], fresh: () => Float64Array): void {
  for (let i = 0; i < cols.length; i++) {
    for (let attempt = 0; ; attempt++) {
      const c = cols[i]!;
      const before = Math.sqrt(dot(c, c));
      for (let pass = 0; pass < 2; pass++) {
        for (let j = 0; j < i; j++) {
          const d = dot(c, cols[j]!);
          for (let e = 0; e < c.length; e++) c[e]! -= d * cols[j]![e]!;
        }
      }
      const n = Math.sqrt(dot(c, c));
      if (n > 1e-10 * Math.max(before, 1e-300) && n > 0) {
        for (let e = 0; e < c.length; e++) c[e]! /= n;
        break;
      }
      if (attempt > 8) throw new PersonaError("E_INTERNAL", "could not complete an orthonormal basis");
      cols[i] = fresh();
    }
  }
}

/**
 * The k-dimensional subspace that holds the most of Σ‖row‖² (the top k right singular vectors of
 * the uncentered rows), as k orthonormal rows, strongest first; all zero rows when every row is
 * zero. Block power iteration with 8 extra columns and a Rayleigh-Ritz step, seeded, so the result
 * is the same on every machine; memory stays rows + (k+8)·n_embd whatever the width.
 */
export function topDirections(rows: readonly ArrayLike<number>[], k: number, dim: number): Float32Array[] {
  if (!Number.isInteger(k) || k < 1 || k > dim) throw new PersonaError("E_BAD_INPUT", `a span needs 1 ≤ k ≤ n_embd (${dim}), got ${k}`);
  if (rows.length < k) throw new PersonaError("E_BAD_INPUT", `a span of ${k} directions needs at least ${k} difference rows, got ${rows.length}`);
  if (rows.every((r) => dot(r, r) === 0)) return Array.from({ length: k }, () => new Float32Array(dim));
  const p = Math.min(dim, k + 8);
  let seed = 0x2545f491;
  const random = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 2 ** 32 - 0.5;
  };
  const fresh = () => Float64Array.from({ length: dim }, random);
  let q = Array.from({ length: p }, fresh);
  orthonormalise(q, fresh);
  // y = D·q (one value per row and column); z = Dᵀ·y: one step of (DᵀD) applied to the block.
  const apply = (cols: Float64Array[]) => {
    const y = rows.map((r) => cols.map((c) => dot(r, c)));
    return { y, z: cols.map((_, j) => {
      const z = new Float64Array(dim);
      rows.forEach((r, i) => { const w = y[i]![j]!; for (let e = 0; e < dim; e++) z[e]! += w * r[e]!; });
      return z;
    }) };
  };
  // Until the leading k columns' span stops moving (each new one lies in the old span to 1e-10).
  for (let it = 0; it < 100; it++) {
    const { z } = apply(q);
    orthonormalise(z, fresh);
    const moved = Math.max(...z.slice(0, k).map((c) => 1 - q.slice(0, k).reduce((s, old) => s + dot(c, old) ** 2, 0)));
    q = z;
    if (moved < 1e-10) break;
  }
  // Rayleigh-Ritz: the block's best rotation, so the first k columns are the top k directions.
  const { y } = apply(q);
  const b = new Float64Array(p * p);
  for (const yi of y) for (let s = 0; s < p; s++) for (let t = 0; t < p; t++) b[s * p + t]! += yi[s]! * yi[t]!;
  const { vectors } = symmetricEigen(b, p);
  return vectors.slice(0, k).map((w) => {
    const out = new Float64Array(dim);
    w.forEach((ws, s) => { for (let e = 0; e < dim; e++) out[e]! += ws * q[s]![e]!; });
    return Float32Array.from(out);
  });
}
