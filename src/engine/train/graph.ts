/**
 * The llama forward pass as our own ggml graph over the loaded model's weight tensors, for
 * training. llama.cpp's own graph cannot train attention: it reads K and V back from the KV
 * cache, a separate tensor that ggml's backward pass does not connect to attn_k/attn_v, so
 * llama_opt leaves those two weights at their initial values. Here K and V feed attention
 * directly, a step holds several windows, and attention and positions restart at every document
 * boundary, so a packed window trains each conversation exactly as inference will see it alone.
 */
import { PersonaError } from "../../errors.js";
import { GGML_ROPE_TYPE_NEOX, GGML_ROPE_TYPE_NORMAL, GGML_TYPE_F32, GGML_TYPE_I32, type GgmlContextHandle, type LlamaApi, type TensorHandle } from "../ffi/llama.js";

export interface LlamaHParams {
  nLayer: number;
  nEmbd: number;
  nHead: number;
  nHeadKv: number;
  nVocab: number;
  nCtxTrain: number;
  rmsEps: number;
  ropeFreqBase: number;
  /** qwen2 adds q/k/v biases and rotates with NEOX RoPE; llama has neither. */
  arch: "llama" | "qwen2";
}

/**
 * Nodes the graph of an n-layer model may need, backward pass and optimiser steps included. Each
 * steering op adds up to 11 forward nodes and their gradients (a fixed size made a finetune with
 * dozens of --steer ablations die on a GGML_ASSERT).
 */
export function graphSize(nLayer: number, nSteer = 0): number {
  return 512 + 256 * nLayer + 48 * nSteer;
}

/**
 * A steering op inside the training graph (validated by resolveSteering): at layer L (the
 * residual after block L−1), on every position, `add` adds `vec` (already coef·v) and `ablate`
 * subtracts coef·(x·v̂ − mean)v̂ with `vec` = v̂. As graph ops, gradients flow through them.
 */
export interface GraphSteer {
  layer: number;
  kind: "add" | "ablate";
  vec: Float32Array;
  coef: number;
  /** ablate: the projection kept (0 or absent = zero-ablation). */
  mean?: number;
  /** ablate: the projection kept on last prompt tokens (the `lastPrompt` input's rows) instead. */
  lastPromptMean?: number;
}

/** A LoRA pair on one weight: its product adds scale·B·(A·x). */
export interface GraphLora {
  a: TensorHandle;
  b: TensorHandle;
  scale: number;
}

/** Graph inputs, filled before every step: token ids, positions, the attention mask, steering vectors and scored rows. */
export interface GraphInputs {
  /** I32 [T·B]. */
  tokens: TensorHandle;
  /** I32 [T·B], position of each token inside its document. */
  positions: TensorHandle;
  /** F32 [T, T, 1, B]: 0 where query i may attend key j, -inf elsewhere. */
  mask: TensorHandle;
  /** F32 [n_embd] per steering op, in order. */
  steer: TensorHandle[];
  /** I32 [M]: the rows (b·T + i) whose next token is scored; null = every row. */
  rows: TensorHandle | null;
  /** F32 [T·B]: 1 on last prompt tokens, 0 elsewhere; only when an ablation keeps a mean there. */
  lastPrompt: TensorHandle | null;
}

/** The names of the tensors the graph reads; `output.weight` falls back to `token_embd.weight` (tied). */
export function llamaTensorNames(nLayer: number, arch: LlamaHParams["arch"] = "llama"): string[] {
  const names = ["token_embd.weight", "output_norm.weight", "output.weight"];
  for (let i = 0; i < nLayer; i++) {
    for (const t of ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]) names.push(`blk.${i}.${t}.weight`);
    if (arch === "qwen2") for (const t of ["attn_q", "attn_k", "attn_v"]) names.push(`blk.${i}.${t}.bias`);
  }
  return names;
}

/**
 * Builds logits [nVocab, M] for B windows of T tokens into `ctx` (a no_alloc context); the
 * allocator places the inputs. M = T·B, or `scoredRows` when only those rows' next tokens are
 * scored (response-only loss): they are gathered before the output projection, so the
 * optimiser's mean cross-entropy is the mean over exactly the scored tokens.
 */
export function buildLlamaGraph(
  api: LlamaApi,
  ctx: GgmlContextHandle,
  weights: ReadonlyMap<string, TensorHandle>,
  hp: LlamaHParams,
  T: number,
  B: number,
  steering: readonly GraphSteer[] = [],
  scoredRows: number | null = null,
  lora: ReadonlyMap<string, GraphLora> = new Map(),
): { inputs: GraphInputs; logits: TensorHandle } {
  const w = (name: string): TensorHandle => {
    const t = weights.get(name) ?? (name === "output.weight" ? weights.get("token_embd.weight") : undefined);
    if (t === undefined) throw new PersonaError("E_BAD_MODEL", `the model has no tensor ${name}`);
    return t;
  };
  const N = T * B;
  const hd = hp.nEmbd / hp.nHead;
  const tokens = api.ggml_new_tensor_1d(ctx, GGML_TYPE_I32, N);
  const positions = api.ggml_new_tensor_1d(ctx, GGML_TYPE_I32, N);
  const mask = api.ggml_new_tensor_4d(ctx, GGML_TYPE_F32, T, T, 1, B);
  const steer = steering.map(() => api.ggml_new_tensor_1d(ctx, GGML_TYPE_F32, hp.nEmbd));
  const rows = scoredRows === null ? null : api.ggml_new_tensor_1d(ctx, GGML_TYPE_I32, scoredRows);
  const lastPrompt = steering.some((op) => op.lastPromptMean !== undefined) ? api.ggml_new_tensor_1d(ctx, GGML_TYPE_F32, N) : null;
  for (const t of [tokens, positions, mask, ...steer, ...(rows ? [rows] : []), ...(lastPrompt ? [lastPrompt] : [])]) api.ggml_set_input(t);

  const norm = (x: TensorHandle, weight: string) => api.ggml_mul(ctx, api.ggml_rms_norm(ctx, x, hp.rmsEps), w(weight));
  const mm = (weight: string, x: TensorHandle) => {
    const y = api.ggml_mul_mat(ctx, w(weight), x);
    const ad = lora.get(weight);
    return ad ? api.ggml_add(ctx, y, api.ggml_scale(ctx, api.ggml_mul_mat(ctx, ad.b, api.ggml_mul_mat(ctx, ad.a, x)), ad.scale)) : y;
  };
  // A projection with its bias where the model has one (qwen2's q/k/v).
  const proj = (name: string, x: TensorHandle) => {
    const y = mm(`${name}.weight`, x);
    const bias = weights.get(`${name}.bias`);
    return bias ? api.ggml_add(ctx, y, bias) : y;
  };
  const ropeType = hp.arch === "qwen2" ? GGML_ROPE_TYPE_NEOX : GGML_ROPE_TYPE_NORMAL;
  const rope = (x: TensorHandle) => api.ggml_rope_ext(ctx, x, positions, null, hd, ropeType, hp.nCtxTrain, hp.ropeFreqBase, 1, 0, 1, 32, 1);
  // [hd, heads, N] → [hd, T, heads, B]
  const headsFirst = (x: TensorHandle, heads: number) => api.ggml_cont(ctx, api.ggml_permute(ctx, api.ggml_reshape_4d(ctx, x, hd, heads, T, B), 0, 2, 1, 3));

  // Grouped-query attention: each KV head repeated for its group of query heads, [a, b, headsKv, B]
  // → [a, b, heads, B] with query head h reading KV head h / group (llama.cpp's grouping), so that
  // the attention products broadcast nothing. ggml's backward of a product that broadcasts its
  // first operand over heads asserts (ggml.c, MUL_MAT backward: ne[3] == 1) when a step holds
  // several windows; folding the windows into the head axis avoids the assert but gave attn_k a
  // wrong gradient (an SGD step on attn_k alone raised the loss).
  const group = hp.nHead / hp.nHeadKv;
  const repeatKv = (t: TensorHandle, a: number, b: number) =>
    group === 1 ? t : api.ggml_reshape_4d(ctx, api.ggml_repeat_4d(ctx, api.ggml_reshape_4d(ctx, t, a * b, 1, hp.nHeadKv, B), a * b, group, hp.nHeadKv, B), a, b, hp.nHead, B);

  let x = api.ggml_get_rows(ctx, w("token_embd.weight"), tokens);
  for (let l = 0; l < hp.nLayer; l++) {
    const b = `blk.${l}`;
    const cur = norm(x, `${b}.attn_norm.weight`);
    const q = headsFirst(rope(api.ggml_reshape_3d(ctx, proj(`${b}.attn_q`, cur), hd, hp.nHead, N)), hp.nHead);
    const k = headsFirst(rope(api.ggml_reshape_3d(ctx, proj(`${b}.attn_k`, cur), hd, hp.nHeadKv, N)), hp.nHeadKv);
    // V as [T, hd, headsKv, B], so that one matrix product weighs it by the attention rows
    const v = api.ggml_cont(ctx, api.ggml_permute(ctx, api.ggml_reshape_4d(ctx, proj(`${b}.attn_v`, cur), hd, hp.nHeadKv, T, B), 1, 2, 0, 3));
    const kq = api.ggml_soft_max_ext(ctx, api.ggml_mul_mat(ctx, repeatKv(k, hd, T), q), mask, 1 / Math.sqrt(hd), 0);
    const kqv = api.ggml_mul_mat(ctx, repeatKv(v, T, hd), kq); // [hd, T, heads, B]
    const merged = api.ggml_reshape_2d(ctx, api.ggml_cont(ctx, api.ggml_permute(ctx, kqv, 0, 2, 1, 3)), hp.nEmbd, N);
    x = api.ggml_add(ctx, x, mm(`${b}.attn_output.weight`, merged));
    const h = norm(x, `${b}.ffn_norm.weight`);
    const act = api.ggml_mul(ctx, api.ggml_silu(ctx, mm(`${b}.ffn_gate.weight`, h)), mm(`${b}.ffn_up.weight`, h));
    x = api.ggml_add(ctx, x, mm(`${b}.ffn_down.weight`, act));
    steering.forEach((op, i) => {
      if (op.layer !== l + 1) return;
      const v = steer[i]!;
      if (op.kind === "add") x = api.ggml_add(ctx, x, v);
      else {
        // (x·v̂) per row as [1, N], then the outer product v̂ ⊗ (x·v̂) as a K = 1 matrix product.
        const column = api.ggml_reshape_2d(ctx, v, 1, hp.nEmbd);
        const along = api.ggml_mul_mat(ctx, v, x);
        const component = api.ggml_mul_mat(ctx, column, along);
        x = api.ggml_sub(ctx, x, api.ggml_scale(ctx, component, op.coef));
        // Mean-preserving: coef·mean·v̂ back, so the projection moves toward mean instead of 0; on
        // last prompt tokens toward lastPromptMean (v̂ ⊗ the row flags adds the difference there).
        const mean = op.mean ?? 0;
        if (mean) x = api.ggml_add(ctx, x, api.ggml_scale(ctx, v, op.coef * mean));
        if (lastPrompt && op.lastPromptMean !== undefined && op.lastPromptMean !== mean) {
          const atLast = api.ggml_mul_mat(ctx, column, api.ggml_reshape_2d(ctx, lastPrompt, 1, N));
          x = api.ggml_add(ctx, x, api.ggml_scale(ctx, atLast, op.coef * (op.lastPromptMean - mean)));
        }
      }
    });
  }
  if (rows) x = api.ggml_get_rows(ctx, x, rows);
  const logits = mm("output.weight", norm(x, "output_norm.weight"));
  return { inputs: { tokens, positions, mask, steer, rows, lastPrompt }, logits };
}

/**
 * Positions and the block-causal mask of B windows of T tokens: a document starts at every
 * `documentStart` token or flagged in `startFlags` (and at each window's start); tokens attend
 * only to earlier tokens of their own document. Without either, each window is one document.
 */
export function documentLayout(
  windows: readonly Int32Array[],
  T: number,
  documentStart: number | null,
  startFlags: readonly Uint8Array[] | null = null,
): { positions: Int32Array; mask: Float32Array } {
  const B = windows.length;
  const positions = new Int32Array(T * B);
  const mask = new Float32Array(T * T * B).fill(-Infinity);
  for (let b = 0; b < B; b++) {
    const win = windows[b]!;
    let start = 0;
    for (let i = 0; i < T; i++) {
      if (i > 0 && ((documentStart !== null && win[i] === documentStart) || startFlags?.[b]![i] === 1)) start = i;
      positions[b * T + i] = i - start;
      // mask row i (query) of window b: keys start..i
      mask.fill(0, b * T * T + i * T + start, b * T * T + i * T + i + 1);
    }
  }
  return { positions, mask };
}
