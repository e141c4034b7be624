/**
 * Hugging Face → llama.cpp tensor names and layouts for the decoder-only families the converter
 * supports (Llama 3/3.1, Qwen2/2.5, Qwen3), as llama.cpp's own convert_hf_to_gguf.py maps them.
 * A torch `[out, in]` weight is already ggml's `ne = [in, out]` byte for byte; only Llama's Q and K
 * rows are permuted (HF rotates halves of each head, llama.cpp's NORM RoPE adjacent pairs).
 */
import { PersonaError } from "../errors.js";

export type HfArch = "llama" | "qwen2" | "qwen3";

/** `config.json` `architectures[0]` → llama.cpp `general.architecture`. */
export const HF_ARCHITECTURES: Readonly<Record<string, HfArch>> = {
  LlamaForCausalLM: "llama",
  Qwen2ForCausalLM: "qwen2",
  Qwen3ForCausalLM: "qwen3",
};

const BLOCK: Readonly<Record<string, string>> = {
  "input_layernorm.weight": "attn_norm.weight",
  "post_attention_layernorm.weight": "ffn_norm.weight",
  "self_attn.q_proj.weight": "attn_q.weight",
  "self_attn.k_proj.weight": "attn_k.weight",
  "self_attn.v_proj.weight": "attn_v.weight",
  "self_attn.o_proj.weight": "attn_output.weight",
  "self_attn.q_proj.bias": "attn_q.bias",
  "self_attn.k_proj.bias": "attn_k.bias",
  "self_attn.v_proj.bias": "attn_v.bias",
  "self_attn.q_norm.weight": "attn_q_norm.weight",
  "self_attn.k_norm.weight": "attn_k_norm.weight",
  "mlp.gate_proj.weight": "ffn_gate.weight",
  "mlp.up_proj.weight": "ffn_up.weight",
  "mlp.down_proj.weight": "ffn_down.weight",
};

const TOP: Readonly<Record<string, string>> = {
  "model.embed_tokens.weight": "token_embd.weight",
  "model.norm.weight": "output_norm.weight",
  "lm_head.weight": "output.weight",
};

/** Tensors a checkpoint may carry that inference does not use. */
const IGNORED = /(^|\.)rotary_emb\.inv_freq$/;

export interface GgufTarget {
  name: string;
  /** Row permutation for Llama's Q/K weights (or biases): the head count to permute with. */
  permuteHeads?: number;
}

/** The llama.cpp name of an HF tensor, or undefined for tensors inference ignores; unknown names are an error. */
export function ggufTensorName(hf: string, arch: HfArch, heads: { nHead: number; nHeadKv: number }): GgufTarget | undefined {
  if (IGNORED.test(hf)) return undefined;
  const top = TOP[hf];
  if (top !== undefined) return { name: top };
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  const mapped = m ? BLOCK[m[2]!] : undefined;
  if (!m || mapped === undefined) throw new PersonaError("E_BAD_MODEL", `tensor "${hf}" is not part of a ${arch} checkpoint this converter knows`);
  const out: GgufTarget = { name: `blk.${m[1]}.${mapped}` };
  if (arch === "llama" && /^self_attn\.[qk]_proj\./.test(m[2]!)) out.permuteHeads = m[2]!.startsWith("self_attn.q") ? heads.nHead : heads.nHeadKv;
  return out;
}

/**
 * llama.cpp's `LlamaModel.permute`: within each head, row j·(d/2)+i (HF: halves) moves to 2i+j
 * (GGUF: interleaved pairs). `rows × cols` row-major; returns a new array.
 */
export function permuteRows(w: Float32Array, rows: number, cols: number, nHeads: number): Float32Array {
  const headDim = rows / nHeads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw new PersonaError("E_BAD_MODEL", `cannot split ${rows} rows into ${nHeads} heads of even size`);
  const half = headDim / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < nHeads; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) {
        const src = (h * headDim + j * half + i) * cols;
        const dst = (h * headDim + 2 * i + j) * cols;
        out.set(w.subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}
