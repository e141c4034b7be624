/**
 * Scores token paths that follow one shared prompt as a prefix tree: the prompt is decoded once
 * and every tree node once, level by level, each node in its own sequence that shares its
 * ancestors' KV cells (llama_memory_seq_cp adds a sequence id to cells, it copies nothing). A
 * local judge scores all numbers 0..100 this way for about the cost of the prompt, whatever way
 * the tokenizer splits digits.
 *
 * The context also keeps the last PROMPT_CACHE prompts in sequences of their own: a prompt that
 * starts like one of them (a judge's rubric and question before each answer) decodes only the
 * rest. Anything else that clears the context's memory drops them.
 */
import { PersonaError } from "../errors.js";
import type { NativeContext, RowPlan } from "./native/NativeContext.js";

export interface PathScore {
  /** log P(path | prompt). */
  logprob: number;
  /** P(the token after the path starts with a digit), i.e. the number would go on. */
  digitNext: number;
}

export interface TreeNode {
  token: number;
  depth: number;
  parent: number;
  children: number[];
  seq: number;
  logprob: number;
  digitNext: number;
}

/** The prefix tree of a set of paths, and what it needs of a context. */
export interface TreePlan {
  nodes: TreeNode[];
  /** Node where each path ends. */
  ends: number[];
  /** Node indices by depth (level 0 = depth 1). */
  levels: number[][];
  /** Sequences alive at once: one level plus its parents, plus the prompt's. */
  sequences: number;
}

export function planTree(paths: readonly Int32Array[]): TreePlan {
  paths.forEach((p, i) => {
    if (p.length === 0) throw new PersonaError("E_BAD_INPUT", `path ${i} is empty`);
  });
  const nodes: TreeNode[] = [{ token: -1, depth: 0, parent: -1, children: [], seq: 0, logprob: 0, digitNext: 0 }];
  const ends: number[] = [];
  for (const path of paths) {
    let at = 0;
    for (const token of path) {
      let next = nodes[at]!.children.find((c) => nodes[c]!.token === token);
      if (next === undefined) {
        next = nodes.length;
        nodes.push({ token, depth: nodes[at]!.depth + 1, parent: at, children: [], seq: -1, logprob: 0, digitNext: 0 });
        nodes[at]!.children.push(next);
      }
      at = next;
    }
    ends.push(at);
  }
  const levels: number[][] = [];
  for (let i = 1; i < nodes.length; i++) (levels[nodes[i]!.depth - 1] ??= []).push(i);
  let sequences = 1 + (levels[0]?.length ?? 0);
  for (let l = 1; l < levels.length; l++) sequences = Math.max(sequences, levels[l]!.length + levels[l - 1]!.length);
  return { nodes, ends, levels, sequences: sequences + 1 };
}

/** Prompts kept per context: two, since a judge alternates a trait's rubric with coherence's. */
export const PROMPT_CACHE = 2;

interface CachedPrompt {
  seq: number;
  tokens: Int32Array;
  lastUsed: number;
}

interface PromptCache {
  epoch: number;
  entries: CachedPrompt[];
  uses: number;
}

const caches = new WeakMap<NativeContext, PromptCache>();

function commonPrefix(a: Int32Array, b: Int32Array, limit: number): number {
  let n = 0;
  while (n < limit && a[n] === b[n]) n++;
  return n;
}

/**
 * Shares sequence 0's cells (the prompt, just decoded) with a cache sequence: the one whose prompt
 * this one mostly repeats (the same rubric with another answer), else a free or the least recently
 * used one.
 */
function keepPrompt(ctx: NativeContext, cache: PromptCache, prompt: Int32Array, treeSeqs: number, best: CachedPrompt | undefined, reused: number): void {
  const entries = cache.entries;
  const used = new Set(entries.map((e) => e.seq));
  const supersedes = best && 2 * reused >= best.tokens.length;
  const replaced = supersedes ? best : entries.length < PROMPT_CACHE ? undefined : entries[0];
  const seq = replaced?.seq ?? [...Array(PROMPT_CACHE).keys()].map((k) => treeSeqs + k).find((q) => !used.has(q))!;
  if (replaced) entries.splice(entries.indexOf(replaced), 1);
  ctx.removeSequence(seq);
  ctx.copySequence(0, seq);
  entries.push({ seq, tokens: prompt.slice(), lastUsed: ++cache.uses });
}

/**
 * `digitTokens[t]` = 1 when token t's text starts with an ASCII digit. The context needs
 * `plan.sequences + PROMPT_CACHE` sequences; `reused` is how many prompt tokens a cached prompt
 * stood in for.
 */
export function scoreTree(ctx: NativeContext, prompt: Int32Array, plan: TreePlan, digitTokens: Uint8Array): { scores: PathScore[]; reused: number } {
  if (prompt.length === 0) throw new PersonaError("E_BAD_INPUT", "the prompt is empty");
  const { nodes, ends, levels } = plan;
  const { nBatch, nSeqMax, nCtx } = ctx.options;
  const treeSeqs = nSeqMax - PROMPT_CACHE;
  if (plan.sequences > treeSeqs) throw new PersonaError("E_BAD_INPUT", `the paths need ${plan.sequences} sequences; the context has ${treeSeqs}`);
  const batch = ctx.batch;
  const rows: RowPlan = { nTokens: 0, owner: new Int32Array(0), pos: new Int32Array(0), cls: new Uint8Array(0), outputs: new Int32Array(0), nOutputs: 0 };
  const decode = () => {
    rows.nTokens = batch.size;
    ctx.decode(rows, []);
  };
  /** Reads node i's next-token distribution from batch row `row`: its children's log-probabilities and the digit mass. */
  const readRow = (i: number, row: number) => {
    const logits = ctx.logits(row);
    let max = -Infinity;
    for (let t = 0; t < logits.length; t++) if (logits[t]! > max) max = logits[t]!;
    let sum = 0;
    let digits = 0;
    for (let t = 0; t < logits.length; t++) {
      const e = Math.exp(logits[t]! - max);
      sum += e;
      if (digitTokens[t]) digits += e;
    }
    const lse = max + Math.log(sum);
    const node = nodes[i]!;
    node.digitNext = digits / sum;
    for (const c of node.children) nodes[c]!.logprob = node.logprob + logits[nodes[c]!.token]! - lse;
  };

  let cache = caches.get(ctx);
  if (!cache || cache.epoch !== ctx.epoch) {
    ctx.clearMemory();
    cache = { epoch: ctx.epoch, entries: [], uses: 0 };
    caches.set(ctx, cache);
  }
  const entries = cache.entries;
  // Cells the cached prompts hold (shared cells counted twice: an upper bound) must leave room.
  const needed = prompt.length + nodes.length;
  const held = () => entries.reduce((a, e) => a + e.tokens.length, 0);
  entries.sort((a, b) => a.lastUsed - b.lastUsed);
  while (entries.length > 0 && held() + needed > nCtx) ctx.removeSequence(entries.shift()!.seq);
  let best: CachedPrompt | undefined;
  let reused = 0;
  for (const e of entries) {
    const n = commonPrefix(e.tokens, prompt, prompt.length - 1);
    if (n > reused) [best, reused] = [e, n];
  }
  if (best) {
    ctx.copySequence(best.seq, 0);
    // A failed partial removal (recurrent memory) empties the sequence: nothing is reused.
    if (!ctx.removeTokens(0, reused)) reused = 0;
  }
  try {
    for (let at = reused; at < prompt.length; at += nBatch) {
      batch.clear();
      const end = Math.min(prompt.length, at + nBatch);
      for (let p = at; p < end; p++) batch.add(prompt[p]!, p, 0, p === prompt.length - 1);
      decode();
    }
    readRow(0, batch.size - 1);
    keepPrompt(ctx, cache, prompt, treeSeqs, best, reused);

    const free: number[] = [];
    for (let s = treeSeqs - 1; s >= 1; s--) free.push(s);
    for (const level of levels) {
      for (const i of level) nodes[i]!.seq = free.pop()!;
      for (let at = 0; at < level.length; at += nBatch) {
        const chunk = level.slice(at, at + nBatch);
        batch.clear();
        for (const i of chunk) {
          const node = nodes[i]!;
          ctx.copySequence(nodes[node.parent]!.seq, node.seq);
          batch.add(node.token, prompt.length + node.depth - 1, node.seq, true);
        }
        decode();
        chunk.forEach((i, row) => readRow(i, row));
      }
      // The parents' cells stay, held by their children's sequences.
      for (const p of new Set(level.map((i) => nodes[i]!.parent))) {
        ctx.removeSequence(nodes[p]!.seq);
        if (p !== 0) free.push(nodes[p]!.seq);
      }
    }
    // Only the tree's sequences go; the prompt's cells stay, held by its cache sequence.
    for (let s = 0; s < treeSeqs; s++) ctx.removeSequence(s);
    return { scores: ends.map((e) => ({ logprob: nodes[e]!.logprob, digitNext: nodes[e]!.digitNext })), reused };
  } catch (e) {
    ctx.clearMemory();
    throw e;
  }
}
