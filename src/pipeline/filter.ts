import { PersonaError } from "../errors.js";

/**
 * The reference's pair filter (spec §2): keep rollout i when its pos reply shows the trait, its neg
 * reply does not, and both are coherent. pos[i] and neg[i] must be the same pair, question and
 * rollout number.
 */
export interface ScoredRow {
  trait: number | null;
  coherence: number | null;
}

export interface FilterOptions {
  /** pos trait must be ≥ this, neg trait < this. Defaults to 50. */
  traitThreshold?: number;
  /** Both coherences must be ≥ this. Defaults to 50. */
  coherenceThreshold?: number;
}

export interface FilterCounts {
  total: number;
  kept: number;
  dropped: number;
  /** Dropped because some score was null (refusal, judge failure). Each drop is counted under its first reason only. */
  nullScore: number;
  /** pos trait below the threshold. */
  posTraitLow: number;
  /** neg trait at or above the threshold. */
  negTraitHigh: number;
  /** A coherence below the threshold. */
  incoherent: number;
}

export interface FilterResult {
  /** Indices of kept rows, ascending. */
  kept: number[];
  counts: FilterCounts;
}

export function filterPairs(pos: readonly ScoredRow[], neg: readonly ScoredRow[], opts: FilterOptions = {}): FilterResult {
  if (pos.length !== neg.length) {
    throw new PersonaError("E_BAD_INPUT", `pos and neg rows must align by index, got ${pos.length} pos and ${neg.length} neg`);
  }
  const thr = opts.traitThreshold ?? 50;
  const coh = opts.coherenceThreshold ?? 50;
  const counts: FilterCounts = { total: pos.length, kept: 0, dropped: 0, nullScore: 0, posTraitLow: 0, negTraitHigh: 0, incoherent: 0 };
  const kept: number[] = [];
  pos.forEach((p, i) => {
    const n = neg[i] as ScoredRow;
    if (p.trait === null || p.coherence === null || n.trait === null || n.coherence === null) counts.nullScore++;
    else if (p.trait < thr) counts.posTraitLow++;
    else if (n.trait >= thr) counts.negTraitHigh++;
    else if (p.coherence < coh || n.coherence < coh) counts.incoherent++;
    else {
      kept.push(i);
      return;
    }
    counts.dropped++;
  });
  counts.kept = kept.length;
  return { kept, counts };
}
