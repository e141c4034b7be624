/**
 * `persona convert hf`: a Hugging Face checkpoint (Llama 3/3.1, Qwen2/2.5, Qwen3: config.json,
 * safetensors shards, tokenizer.json, tokenizer_config.json) → one GGUF llama.cpp loads, written
 * the way llama.cpp's convert_hf_to_gguf.py writes it. Tensors stream through in row blocks
 * (a 16 GB checkpoint needs about one block of memory, not 16 GB).
 */
import { PersonaError } from "../errors.js";
import { writeByteBpeTokenizer } from "../engine/gguf/tokenizer-meta.js";
import { GgmlType } from "../engine/gguf/types.js";
import { type WritableType, GgufWriter } from "../engine/gguf/writer.js";
import { type Checkpoint, type CheckpointTensor, openCheckpoint, readRows } from "./checkpoint.js";
import { HF_ARCHITECTURES, type HfArch, ggufTensorName, permuteRows } from "./names.js";
import { readHfTokenizer } from "./tokenizer.js";

export const OUT_TYPES = ["f32", "f16", "bf16", "q8_0"] as const;
export type OutType = (typeof OUT_TYPES)[number];

export interface ConvertHfOptions {
  /** Type of the 2-D weight matrices (norms and biases stay f32). Defaults to f16. */
  type?: OutType;
  /** general.name. Defaults to the config's `_name_or_path`, else the directory name. */
  name?: string;
  /** Called after each tensor is written. */
  onProgress?: (done: number, total: number, tensor: string) => void;
}

export interface HfModelParams {
  arch: HfArch;
  nEmbd: number;
  nLayer: number;
  nFf: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  nCtx: number;
  ropeBase: number;
  rmsEps: number;
  vocabSize: number;
  tied: boolean;
  /** Llama 3.1's rope_scaling (rope_type "llama3"). */
  llama3Rope?: { factor: number; lowFreqFactor: number; highFreqFactor: number; originalContext: number };
}

const FILE_TYPE: Record<OutType, number> = { f32: 0, f16: 1, q8_0: 7, bf16: 32 };
const GGML_OUT: Record<OutType, WritableType> = { f32: GgmlType.F32, f16: GgmlType.F16, bf16: GgmlType.BF16, q8_0: GgmlType.Q8_0 };
/** Elements per streamed block: a few MB at a time. */
const BLOCK_ELEMENTS = 1 << 20;

/** Reads and checks the hyper-parameters of a supported checkpoint's config.json. */
export function hfModelParams(config: Record<string, unknown>, dir: string): HfModelParams {
  const archName = Array.isArray(config.architectures) ? String(config.architectures[0]) : undefined;
  const arch = archName !== undefined ? HF_ARCHITECTURES[archName] : undefined;
  if (arch === undefined) {
    throw new PersonaError("E_BAD_MODEL", `${dir}: architecture ${archName ?? "(none)"} is not supported; supported: ${Object.keys(HF_ARCHITECTURES).join(", ")}`);
  }
  const int = (key: string, fallback?: number): number => {
    const v = config[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1) throw new PersonaError("E_BAD_MODEL", `${dir}/config.json: ${key} is ${JSON.stringify(v)}, expected a positive integer`);
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = config[key] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw new PersonaError("E_BAD_MODEL", `${dir}/config.json: ${key} is ${JSON.stringify(v)}`);
    return v;
  };
  const nEmbd = int("hidden_size");
  const nHead = int("num_attention_heads");
  const p: HfModelParams = {
    arch,
    nEmbd,
    nLayer: int("num_hidden_layers"),
    nFf: int("intermediate_size"),
    nHead,
    nHeadKv: int("num_key_value_heads", nHead),
    headDim: int("head_dim", nEmbd / nHead),
    nCtx: int("max_position_embeddings", 4096),
    ropeBase: num("rope_theta", 10000),
    rmsEps: num("rms_norm_eps", 1e-6),
    vocabSize: int("vocab_size"),
    tied: config.tie_word_embeddings === true,
  };
  if (nHead % p.nHeadKv !== 0) throw new PersonaError("E_BAD_MODEL", `${dir}/config.json: ${nHead} heads do not group into ${p.nHeadKv} KV heads`);
  const scaling = config.rope_scaling as Record<string, unknown> | null | undefined;
  if (scaling) {
    const type = String(scaling.rope_type ?? scaling.type ?? "");
    if (type !== "llama3") throw new PersonaError("E_BAD_MODEL", `${dir}/config.json: rope_scaling type "${type}" is not supported (only Llama 3.1's "llama3")`);
    p.llama3Rope = {
      factor: Number(scaling.factor ?? 8),
      lowFreqFactor: Number(scaling.low_freq_factor ?? 1),
      highFreqFactor: Number(scaling.high_freq_factor ?? 4),
      originalContext: Number(scaling.original_max_position_embeddings ?? 8192),
    };
  }
  return p;
}

/** llama.cpp's rope_freqs for Llama 3.1: per frequency, the factor its angle is divided by. */
export function llama3RopeFactors(p: HfModelParams): Float32Array {
  const s = p.llama3Rope!;
  const lowWavelen = s.originalContext / s.lowFreqFactor;
  const highWavelen = s.originalContext / s.highFreqFactor;
  return Float32Array.from({ length: p.headDim / 2 }, (_, i) => {
    const freq = 1 / p.ropeBase ** ((2 * i) / p.headDim);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) return 1;
    if (wavelen > lowWavelen) return s.factor;
    const smooth = (s.originalContext / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return 1 / ((1 - smooth) / s.factor + smooth);
  });
}

/** Streams a checkpoint tensor in blocks of whole rows (whole heads when permuted). */
export function tensorBlocks(t: CheckpointTensor, permuteHeads?: number): () => AsyncIterable<Float32Array> {
  const rows = t.shape.length === 1 ? 1 : t.shape[0]!;
  const cols = t.shape.length === 1 ? t.shape[0]! : t.shape[1]!;
  const unit = permuteHeads !== undefined ? rows / permuteHeads : 1;
  const step = Math.max(unit, Math.floor(BLOCK_ELEMENTS / cols / unit) * unit);
  return async function* () {
    for (let r = 0; r < rows; r += step) {
      const n = Math.min(step, rows - r);
      const block = await readRows(t, r, n);
      yield permuteHeads !== undefined ? permuteRows(block, n, cols, n / unit) : block;
    }
  };
}

function writeParams(w: GgufWriter, p: HfModelParams, name: string, type: OutType): void {
  const a = p.arch;
  w.setString("general.architecture", a);
  w.setString("general.name", name);
  w.setU32("general.file_type", FILE_TYPE[type]);
  w.setU32("general.quantization_version", 2);
  w.setU32(`${a}.context_length`, p.nCtx);
  w.setU32(`${a}.embedding_length`, p.nEmbd);
  w.setU32(`${a}.block_count`, p.nLayer);
  w.setU32(`${a}.feed_forward_length`, p.nFf);
  w.setU32(`${a}.attention.head_count`, p.nHead);
  w.setU32(`${a}.attention.head_count_kv`, p.nHeadKv);
  w.setU32(`${a}.attention.key_length`, p.headDim);
  w.setU32(`${a}.attention.value_length`, p.headDim);
  w.setU32(`${a}.rope.dimension_count`, p.headDim);
  w.setF32(`${a}.rope.freq_base`, p.ropeBase);
  w.setF32(`${a}.attention.layer_norm_rms_epsilon`, p.rmsEps);
  w.setU32(`${a}.vocab_size`, p.vocabSize);
}

/** Adds every checkpoint tensor under its llama.cpp name; returns the count. */
function addTensors(w: GgufWriter, ck: Checkpoint, p: HfModelParams, type: OutType): number {
  let n = 0;
  for (const [hfName, t] of ck.tensors) {
    const target = ggufTensorName(hfName, p.arch, p);
    if (target === undefined || (target.name === "output.weight" && p.tied)) continue;
    if (t.shape.length < 1 || t.shape.length > 2) throw new PersonaError("E_BAD_MODEL", `${hfName} has shape [${t.shape.join(", ")}]`);
    const ne = [...t.shape].reverse();
    // Matrices take the chosen type; Q8_0 needs rows in whole 32-blocks (else F16, as llama.cpp does).
    let ggmlType: WritableType = t.shape.length === 2 ? GGML_OUT[type] : GgmlType.F32;
    if (ggmlType === GgmlType.Q8_0 && ne[0]! % 32 !== 0) ggmlType = GgmlType.F16;
    w.addTensor(target.name, ne, tensorBlocks(t, target.permuteHeads), ggmlType);
    n++;
  }
  return n;
}

export interface ConvertResult {
  arch: HfArch;
  tensors: number;
  params: HfModelParams;
}

export async function convertHf(dir: string, out: string, opts: ConvertHfOptions = {}): Promise<ConvertResult> {
  const type = opts.type ?? "f16";
  if (!OUT_TYPES.includes(type)) throw new PersonaError("E_BAD_INPUT", `--type must be one of ${OUT_TYPES.join(", ")}`);
  const ck = await openCheckpoint(dir);
  const p = hfModelParams(ck.config, dir);
  const embd = ck.tensors.get("model.embed_tokens.weight");
  if (!embd) throw new PersonaError("E_BAD_MODEL", `${dir}: no model.embed_tokens.weight in the safetensors`);
  if (embd.shape[0] !== p.vocabSize || embd.shape[1] !== p.nEmbd) {
    throw new PersonaError("E_BAD_MODEL", `${dir}: embed_tokens is [${embd.shape.join(", ")}] but config.json says [${p.vocabSize}, ${p.nEmbd}]`);
  }
  const tok = await readHfTokenizer(dir, {
    vocabSize: p.vocabSize,
    ...(typeof ck.config.bos_token_id === "number" ? { bosTokenId: ck.config.bos_token_id } : {}),
    ...(typeof ck.config.eos_token_id === "number" ? { eosTokenId: ck.config.eos_token_id } : {}),
  });
  if (tok.tokens.length !== p.vocabSize) {
    throw new PersonaError("E_BAD_MODEL", `${dir}: the tokenizer has ${tok.tokens.length} tokens but the embedding ${p.vocabSize} rows`);
  }
  const name = opts.name ?? (typeof ck.config._name_or_path === "string" && ck.config._name_or_path ? ck.config._name_or_path : dir.split(/[\\/]/).filter(Boolean).pop()!);
  const w = new GgufWriter();
  writeParams(w, p, name, type);
  writeByteBpeTokenizer(w, tok);
  const n = addTensors(w, ck, p, type);
  if (p.llama3Rope) w.addTensor("rope_freqs.weight", [p.headDim / 2], llama3RopeFactors(p), GgmlType.F32);
  await w.write(out, opts.onProgress);
  return { arch: p.arch, tensors: n + (p.llama3Rope ? 1 : 0), params: p };
}
