/**
 * Float64 reference forward pass of llama.cpp's "llama", "qwen2" and "qwen3" graphs
 * (src/models/llama.cpp, qwen2.cpp, qwen3.cpp), reading the weights back from the GGUF file — or,
 * through `referenceForwardFrom`, from any source such as a Hugging Face checkpoint. Tests compare
 * activations captured from the engine with this, so it follows llama.cpp's conventions exactly:
 * RMSNorm with the file's eps, RoPE NORM (llama: adjacent pairs) or NEOX (qwen: halves; also what
 * Hugging Face's rotate_half does on unpermuted weights), Llama 3.1 rope factors, per-head Q/K
 * norms (qwen3), scale 1/sqrt(head dim), causal mask, GQA, SwiGLU, optional biases, final norm,
 * output (or tied token_embd). Single sequence at positions 0..n-1.
 */
import { PersonaError } from "../../src/errors.js";
import { getNumber, hasKey, readGguf, readTensorF32, requireNumber, requireString, type GgufFile } from "../../src/engine/gguf/reader.js";

export interface ReferenceResult {
  /** Index l in 0..nLayer, each [nTokens*nEmbd]: l = 0 embeddings, l >= 1 output of block l-1 (before the final norm). */
  residuals: Float64Array[];
  /** [nTokens*nVocab]. */
  logits: Float64Array;
}

type Weights = Float32Array;

/** y[t*nOut + j] = sum_i W[j*nIn + i] * x[t*nIn + i] (+ b[j]); W in ggml order ne = [nIn, nOut]. */
function matmul(x: Float64Array, nTok: number, w: Weights, nIn: number, nOut: number, b?: Weights): Float64Array {
  if (w.length !== nIn * nOut) throw new PersonaError("E_SHAPE", `weight has ${w.length} values, expected ${nIn}x${nOut}`);
  const y = new Float64Array(nTok * nOut);
  for (let t = 0; t < nTok; t++) {
    const xo = t * nIn;
    for (let j = 0; j < nOut; j++) {
      const wo = j * nIn;
      let s = 0;
      for (let i = 0; i < nIn; i++) s += w[wo + i]! * x[xo + i]!;
      y[t * nOut + j] = s + (b ? b[j]! : 0);
    }
  }
  return y;
}

function rmsNorm(x: Float64Array, nTok: number, n: number, w: Weights, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let t = 0; t < nTok; t++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[t * n + i]! ** 2;
    const scale = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) y[t * n + i] = x[t * n + i]! * scale * w[i]!;
  }
  return y;
}

/** In place; x is [nTok][nHeads][headDim]; `factors` divide each frequency's angle (Llama 3.1). */
function rope(x: Float64Array, nTok: number, nHeads: number, headDim: number, base: number, neox: boolean, factors?: Weights): void {
  const half = headDim / 2;
  for (let t = 0; t < nTok; t++) {
    for (let h = 0; h < nHeads; h++) {
      const o = (t * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const theta = (t * base ** ((-2 * i) / headDim)) / (factors ? factors[i]! : 1);
        const c = Math.cos(theta);
        const s = Math.sin(theta);
        const a = neox ? o + i : o + 2 * i;
        const b = neox ? o + i + half : o + 2 * i + 1;
        const x0 = x[a]!;
        const x1 = x[b]!;
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
      }
    }
  }
}

function silu(v: number): number {
  return v / (1 + Math.exp(-v));
}

/** Hyper-parameters and weights (by llama.cpp tensor name, ggml order) for `referenceForwardFrom`. */
export interface WeightSource {
  nLayer: number;
  nEmbd: number;
  nFf: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  eps: number;
  ropeBase: number;
  /** NEOX (halves) rotation; false = NORM (adjacent pairs). */
  neox: boolean;
  tensor(name: string): Promise<Weights | undefined>;
}

export async function referenceForward(fileOrPath: GgufFile | string, tokens: number[], opts: { weight?: (name: string, w: Weights) => Weights } = {}): Promise<ReferenceResult> {
  const file = typeof fileOrPath === "string" ? await readGguf(fileOrPath) : fileOrPath;
  const arch = requireString(file, "general.architecture");
  if (arch !== "llama" && arch !== "qwen2" && arch !== "qwen3") throw new PersonaError("E_BAD_MODEL", `reference forward supports llama, qwen2 and qwen3, not ${arch}`);
  const nEmbd = requireNumber(file, `${arch}.embedding_length`);
  const nHead = requireNumber(file, `${arch}.attention.head_count`);
  const headDim = getNumber(file, `${arch}.attention.key_length`) ?? nEmbd / nHead;
  const nRot = getNumber(file, `${arch}.rope.dimension_count`) ?? headDim;
  if (nRot !== headDim || (getNumber(file, `${arch}.attention.value_length`) ?? headDim) !== headDim) {
    throw new PersonaError("E_BAD_MODEL", "reference forward needs rope dims = key length = value length");
  }
  if (hasKey(file, `${arch}.rope.scaling.factor`)) throw new PersonaError("E_BAD_MODEL", "reference forward does not implement RoPE scaling");
  const weight = opts.weight ?? ((_: string, w: Weights) => w);
  return referenceForwardFrom(
    {
      nLayer: requireNumber(file, `${arch}.block_count`),
      nEmbd,
      nFf: requireNumber(file, `${arch}.feed_forward_length`),
      nHead,
      nHeadKv: getNumber(file, `${arch}.attention.head_count_kv`) ?? nHead,
      headDim,
      eps: requireNumber(file, `${arch}.attention.layer_norm_rms_epsilon`),
      ropeBase: getNumber(file, `${arch}.rope.freq_base`) ?? 10000,
      neox: arch !== "llama", // llama_model_rope_type: LLAMA -> NORM, QWEN2/QWEN3 -> NEOX
      tensor: async (name) => (file.tensorsByName.has(name) ? weight(name, await readTensorF32(file, name)) : undefined),
    },
    tokens,
  );
}

export async function referenceForwardFrom(src: WeightSource, tokens: number[]): Promise<ReferenceResult> {
  const { nLayer, nEmbd, nFf, nHead, nHeadKv, headDim, eps, neox } = src;
  const base = src.ropeBase;
  const optional = (name: string): Promise<Weights | undefined> => src.tensor(name);
  const tensor = async (name: string): Promise<Weights> => {
    const w = await src.tensor(name);
    if (!w) throw new PersonaError("E_NOT_FOUND", `reference forward: no tensor ${name}`);
    return w;
  };
  const factors = await optional("rope_freqs.weight");

  const embd = await tensor("token_embd.weight");
  const nVocab = embd.length / nEmbd;
  const n = tokens.length;
  let x: Float64Array = new Float64Array(n * nEmbd);
  tokens.forEach((tok, t) => {
    if (!Number.isInteger(tok) || tok < 0 || tok >= nVocab) throw new PersonaError("E_BAD_INPUT", `token ${tok} outside vocabulary of ${nVocab}`);
    for (let i = 0; i < nEmbd; i++) x[t * nEmbd + i] = embd[tok * nEmbd + i]!;
  });
  const residuals: Float64Array[] = [x.slice()];

  const qDim = nHead * headDim;
  const kvDim = nHeadKv * headDim;
  const group = nHead / nHeadKv;
  const scale = 1 / Math.sqrt(headDim);
  for (let l = 0; l < nLayer; l++) {
    const p = `blk.${l}`;
    const h = rmsNorm(x, n, nEmbd, await tensor(`${p}.attn_norm.weight`), eps);
    const q = matmul(h, n, await tensor(`${p}.attn_q.weight`), nEmbd, qDim, await optional(`${p}.attn_q.bias`));
    const k = matmul(h, n, await tensor(`${p}.attn_k.weight`), nEmbd, kvDim, await optional(`${p}.attn_k.bias`));
    const v = matmul(h, n, await tensor(`${p}.attn_v.weight`), nEmbd, kvDim, await optional(`${p}.attn_v.bias`));
    const qNorm = await optional(`${p}.attn_q_norm.weight`);
    const kNorm = await optional(`${p}.attn_k_norm.weight`);
    // Qwen3: RMSNorm over each head's vector before RoPE.
    const qn = qNorm ? rmsNorm(q, n * nHead, headDim, qNorm, eps) : q;
    const kn = kNorm ? rmsNorm(k, n * nHeadKv, headDim, kNorm, eps) : k;
    rope(qn, n, nHead, headDim, base, neox, factors);
    rope(kn, n, nHeadKv, headDim, base, neox, factors);

    const attn = new Float64Array(n * qDim);
    const scores = new Float64Array(n);
    for (let hd = 0; hd < nHead; hd++) {
      const kh = Math.floor(hd / group);
      for (let t = 0; t < n; t++) {
        let max = -Infinity;
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let i = 0; i < headDim; i++) dot += qn[t * qDim + hd * headDim + i]! * kn[s * kvDim + kh * headDim + i]!;
          scores[s] = dot * scale;
          if (scores[s]! > max) max = scores[s]!;
        }
        let sum = 0;
        for (let s = 0; s <= t; s++) {
          scores[s] = Math.exp(scores[s]! - max);
          sum += scores[s]!;
        }
        for (let s = 0; s <= t; s++) {
          const wgt = scores[s]! / sum;
          for (let i = 0; i < headDim; i++) {
            const a = t * qDim + hd * headDim + i;
            attn[a] = attn[a]! + wgt * v[s * kvDim + kh * headDim + i]!;
          }
        }
      }
    }
    const o = matmul(attn, n, await tensor(`${p}.attn_output.weight`), qDim, nEmbd, await optional(`${p}.attn_output.bias`));
    for (let i = 0; i < x.length; i++) o[i] = o[i]! + x[i]!;
    const ffnIn = o;

    const f = rmsNorm(ffnIn, n, nEmbd, await tensor(`${p}.ffn_norm.weight`), eps);
    const gate = matmul(f, n, await tensor(`${p}.ffn_gate.weight`), nEmbd, nFf, await optional(`${p}.ffn_gate.bias`));
    const up = matmul(f, n, await tensor(`${p}.ffn_up.weight`), nEmbd, nFf, await optional(`${p}.ffn_up.bias`));
    for (let i = 0; i < gate.length; i++) gate[i] = silu(gate[i]!) * up[i]!;
    const down = matmul(gate, n, await tensor(`${p}.ffn_down.weight`), nFf, nEmbd, await optional(`${p}.ffn_down.bias`));
    for (let i = 0; i < down.length; i++) down[i] = down[i]! + ffnIn[i]!;
    x = down;
    residuals.push(x.slice());
  }

  const normed = rmsNorm(x, n, nEmbd, await tensor("output_norm.weight"), eps);
  const outW = (await optional("output.weight")) ?? embd;
  const logits = matmul(normed, n, outW, nEmbd, nVocab, await optional("output.bias"));
  return { residuals, logits };
}

/** Largest absolute difference over the largest reference magnitude. */
export function relErr(got: Float32Array, want: Float64Array | Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num = Math.max(num, Math.abs(got[i]! - want[i]!));
    den = Math.max(den, Math.abs(want[i]!));
  }
  return num / den;
}

/** Reference reductions for one sequence: [layer][n_embd] flattened. */
export function reduce(residuals: Float64Array[], nEmbd: number, from: number, to: number): Float64Array {
  const out = new Float64Array(residuals.length * nEmbd);
  residuals.forEach((r, l) => {
    for (let t = from; t < to; t++) for (let j = 0; j < nEmbd; j++) out[l * nEmbd + j]! += r[t * nEmbd + j]! / (to - from);
  });
  return out;
}
