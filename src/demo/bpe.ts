import { PersonaError } from "../errors.js";
import { byteTokens, bytesToUnicode } from "../engine/gguf/byte-unicode.js";

/**
 * Byte-level BPE (GPT-2 style) for the demo model's tokenizer. Text is cut at special tokens,
 * pre-split with the GPT-2 regex, and each piece is spelled in byte-unicode characters. Training
 * counts each distinct piece once with its frequency, keeps per-pair counts and the pieces each
 * pair occurs in, and after every merge re-counts only the pieces that contained the merged pair,
 * so a few MB of text train in seconds. The best pair is the most frequent; ties go to the pair
 * whose token ids are smallest, which keeps training deterministic.
 */
export const GPT2_PRETOKENIZE = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export interface BpeOptions {
  /** Total vocabulary: 256 byte tokens + merges + special tokens. */
  vocabSize: number;
  /** Appended after the merged tokens, never split or merged (e.g. `<|im_start|>`). Defaults to none. */
  specialTokens?: readonly string[];
  /** A pair must occur at least this often to be merged. Defaults to 2. */
  minFrequency?: number;
}

export interface BpeVocab {
  /** 256 byte tokens, then merged tokens in merge order, then special tokens. */
  tokens: string[];
  /** `"left right"` in byte-unicode form, in merge order (rank). */
  merges: string[];
}

const encoder = new TextEncoder();

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Splits text into special tokens and ordinary segments, in order. */
function splitSpecial(text: string, specials: readonly string[]): { text: string; special: boolean }[] {
  if (specials.length === 0) return [{ text, special: false }];
  const re = new RegExp([...specials].sort((a, b) => b.length - a.length).map(escapeRegex).join("|"), "g");
  const out: { text: string; special: boolean }[] = [];
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) out.push({ text: text.slice(last, m.index), special: false });
    out.push({ text: m[0], special: true });
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push({ text: text.slice(last), special: false });
  return out;
}

/** GPT-2 pre-tokens of ordinary text, spelled in byte-unicode characters. */
export function pretokenize(text: string): string[] {
  return Array.from(text.matchAll(GPT2_PRETOKENIZE), (m) => bytesToUnicode(encoder.encode(m[0])));
}

/** Max-heap of (count, pair) with lazy deletion: stale entries are skipped when popped. */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  private before(i: number, j: number): boolean {
    const a = this.counts[i]!, b = this.counts[j]!;
    return a !== b ? a > b : this.keys[i]! < this.keys[j]!;
  }

  private swap(i: number, j: number): void {
    [this.counts[i], this.counts[j]] = [this.counts[j]!, this.counts[i]!];
    [this.keys[i], this.keys[j]] = [this.keys[j]!, this.keys[i]!];
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  pop(): { count: number; key: number } | undefined {
    const n = this.counts.length;
    if (n === 0) return undefined;
    const top = { count: this.counts[0]!, key: this.keys[0]! };
    const lastC = this.counts.pop()!;
    const lastK = this.keys.pop()!;
    if (n > 1) {
      this.counts[0] = lastC;
      this.keys[0] = lastK;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < n - 1 && this.before(l, m)) m = l;
        if (r < n - 1 && this.before(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
}

// Pair keys pack two token ids; ids stay below 2^21 for any sensible vocabulary.
const ID_SPACE = 2 ** 21;
const pairKey = (a: number, b: number) => a * ID_SPACE + b;

export function trainByteLevelBpe(texts: Iterable<string>, options: BpeOptions): BpeVocab {
  const { vocabSize, specialTokens = [], minFrequency = 2 } = options;
  const base = byteTokens();
  const nMerges = vocabSize - base.length - specialTokens.length;
  if (!Number.isInteger(vocabSize) || nMerges < 0 || vocabSize >= ID_SPACE) {
    throw new PersonaError("E_BAD_INPUT", `vocabSize must be an integer of at least ${base.length + specialTokens.length} (256 bytes + special tokens), got ${vocabSize}`);
  }

  const pieceCounts = new Map<string, number>();
  for (const text of texts) {
    for (const seg of splitSpecial(text, specialTokens)) {
      if (seg.special) continue;
      for (const p of pretokenize(seg.text)) pieceCounts.set(p, (pieceCounts.get(p) ?? 0) + 1);
    }
  }

  const tokens = [...base];
  const idOf = new Map(base.map((t, i) => [t, i]));
  const words: number[][] = [];
  const freq: number[] = [];
  for (const [piece, count] of pieceCounts) {
    words.push(Array.from(piece, (ch) => idOf.get(ch)!));
    freq.push(count);
  }

  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addWord = (w: number, sign: 1 | -1, touched: Set<number>) => {
    const sym = words[w]!;
    for (let i = 1; i < sym.length; i++) {
      const k = pairKey(sym[i - 1]!, sym[i]!);
      pairCounts.set(k, (pairCounts.get(k) ?? 0) + sign * freq[w]!);
      touched.add(k);
      if (sign > 0) {
        let set = pairWords.get(k);
        if (!set) pairWords.set(k, (set = new Set()));
        set.add(w);
      }
    }
  };

  const heap = new PairHeap();
  const initial = new Set<number>();
  for (let w = 0; w < words.length; w++) addWord(w, 1, initial);
  for (const k of initial) heap.push(pairCounts.get(k)!, k);

  const merges: string[] = [];
  while (merges.length < nMerges) {
    const top = heap.pop();
    if (!top || top.count < minFrequency) break;
    if (pairCounts.get(top.key) !== top.count) continue;
    const a = Math.floor(top.key / ID_SPACE);
    const b = top.key % ID_SPACE;
    const id = tokens.length;
    tokens.push(tokens[a]! + tokens[b]!);
    merges.push(`${tokens[a]} ${tokens[b]}`);

    const touched = new Set<number>();
    for (const w of pairWords.get(top.key) ?? []) {
      const sym = words[w]!;
      let found = false;
      for (let i = 1; i < sym.length; i++) if (sym[i - 1] === a && sym[i] === b) found = true;
      if (!found) continue;
      addWord(w, -1, touched);
      const next: number[] = [];
      for (let i = 0; i < sym.length; i++) {
        if (i + 1 < sym.length && sym[i] === a && sym[i + 1] === b) {
          next.push(id);
          i++;
        } else next.push(sym[i]!);
      }
      words[w] = next;
      addWord(w, 1, touched);
    }
    pairWords.delete(top.key);
    for (const k of touched) {
      const c = pairCounts.get(k)!;
      if (c > 0) heap.push(c, k);
      else pairCounts.delete(k);
    }
  }
  return { tokens: [...tokens, ...specialTokens], merges };
}

/**
 * Plain reference encoder: applies merges by rank to each pre-token (lowest-ranked adjacent pair
 * first, all its occurrences left to right). Returns token strings; special tokens pass through whole.
 */
export function encodeWithBpe(text: string, merges: readonly string[], specialTokens: readonly string[] = []): string[] {
  const rank = new Map(merges.map((m, i) => [m, i]));
  const out: string[] = [];
  for (const seg of splitSpecial(text, specialTokens)) {
    if (seg.special) {
      out.push(seg.text);
      continue;
    }
    for (const piece of pretokenize(seg.text)) {
      let sym = Array.from(piece);
      for (;;) {
        let best = -1;
        let bestRank = Infinity;
        for (let i = 1; i < sym.length; i++) {
          const r = rank.get(`${sym[i - 1]} ${sym[i]}`);
          if (r !== undefined && r < bestRank) {
            bestRank = r;
            best = i;
          }
        }
        if (best < 0) break;
        const [l, r] = merges[bestRank]!.split(" ") as [string, string];
        const next: string[] = [];
        for (let i = 0; i < sym.length; i++) {
          if (i + 1 < sym.length && sym[i] === l && sym[i + 1] === r) {
            next.push(l + r);
            i++;
          } else next.push(sym[i]!);
        }
        sym = next;
      }
      out.push(...sym);
    }
  }
  return out;
}
