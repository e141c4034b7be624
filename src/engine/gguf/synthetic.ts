/**
 * Random-weight llama/qwen2 GGUF models for tests and benchmarks. Weights come from a seeded
 * PRNG, one independent stream per tensor, generated in chunks while the file is written, so
 * a 50M-parameter model costs a few MB of memory.
 */
import { PersonaError } from "../../errors.js";
import { GgmlType } from "./types.js";
import { chatmlTokenizer, writeByteBpeTokenizer, type ByteBpeTokenizerSpec } from "./tokenizer-meta.js";
import { GgufWriter } from "./writer.js";

export interface SyntheticModelConfig {
  arch: "llama" | "qwen2";
  nLayer: number;
  nEmbd: number;
  nHead: number;
  nHeadKv: number;
  nFf: number;
  contextLength: number;
  /** Defaults to 10000 for llama, 1000000 for qwen2. */
  ropeFreqBase?: number;
  /** Defaults to 1e-5 for llama, 1e-6 for qwen2. */
  rmsEps?: number;
  seed: number;
  /** Defaults to chatmlTokenizer(). */
  tokenizer?: ByteBpeTokenizerSpec;
  /** Omit output.weight so llama.cpp reuses token_embd. Defaults to false. */
  tiedEmbeddings?: boolean;
  /** std of the weight matrices (output projections of each block are scaled by 1/sqrt(2·nLayer)). Defaults to 0.02. */
  init?: {
    std?: number;
    /** std of token_embd, which llama.cpp's optimiser never trains: a model trained from scratch keeps it. Defaults to std. */
    embeddingStd?: number;
  };
  /** Storage type of the 2-D weights; norms and biases stay F32 as llama.cpp converters do. Defaults to "f32". */
  type?: "f32" | "f16";
  /** general.name. Defaults to "synthetic-<arch>". */
  name?: string;
}

interface TensorPlan {
  name: string;
  ne: number[];
  /** "normal" draws N(mean, std); norms are 1 plus noise. */
  mean: number;
  std: number;
  matrix: boolean;
}

function validate(cfg: SyntheticModelConfig): void {
  const ints: [string, number][] = [
    ["nLayer", cfg.nLayer],
    ["nEmbd", cfg.nEmbd],
    ["nHead", cfg.nHead],
    ["nHeadKv", cfg.nHeadKv],
    ["nFf", cfg.nFf],
    ["contextLength", cfg.contextLength],
  ];
  for (const [k, v] of ints) {
    if (!Number.isInteger(v) || v < 1) throw new PersonaError("E_BAD_INPUT", `${k} must be a positive integer, got ${v}`);
  }
  if (cfg.nEmbd % cfg.nHead !== 0) throw new PersonaError("E_BAD_INPUT", `nEmbd ${cfg.nEmbd} is not a multiple of nHead ${cfg.nHead}`);
  if (cfg.nHead % cfg.nHeadKv !== 0) throw new PersonaError("E_BAD_INPUT", `nHead ${cfg.nHead} is not a multiple of nHeadKv ${cfg.nHeadKv}`);
  if ((cfg.nEmbd / cfg.nHead) % 2 !== 0) throw new PersonaError("E_BAD_INPUT", `head size ${cfg.nEmbd / cfg.nHead} must be even for RoPE`);
}

function plan(cfg: SyntheticModelConfig, nVocab: number): TensorPlan[] {
  const std = cfg.init?.std ?? 0.02;
  const residualStd = std / Math.sqrt(2 * cfg.nLayer);
  const headDim = cfg.nEmbd / cfg.nHead;
  const nEmbdKv = headDim * cfg.nHeadKv;
  const mat = (name: string, ne: number[], s = std): TensorPlan => ({ name, ne, mean: 0, std: s, matrix: true });
  const vec = (name: string, n: number, mean: number, s: number): TensorPlan => ({ name, ne: [n], mean, std: s, matrix: false });
  const out: TensorPlan[] = [mat("token_embd.weight", [cfg.nEmbd, nVocab], cfg.init?.embeddingStd ?? std)];
  for (let i = 0; i < cfg.nLayer; i++) {
    const b = `blk.${i}`;
    out.push(vec(`${b}.attn_norm.weight`, cfg.nEmbd, 1, 0.1));
    out.push(mat(`${b}.attn_q.weight`, [cfg.nEmbd, cfg.nEmbd]));
    out.push(mat(`${b}.attn_k.weight`, [cfg.nEmbd, nEmbdKv]));
    out.push(mat(`${b}.attn_v.weight`, [cfg.nEmbd, nEmbdKv]));
    if (cfg.arch === "qwen2") {
      out.push(vec(`${b}.attn_q.bias`, cfg.nEmbd, 0, std));
      out.push(vec(`${b}.attn_k.bias`, nEmbdKv, 0, std));
      out.push(vec(`${b}.attn_v.bias`, nEmbdKv, 0, std));
    }
    out.push(mat(`${b}.attn_output.weight`, [cfg.nEmbd, cfg.nEmbd], residualStd));
    out.push(vec(`${b}.ffn_norm.weight`, cfg.nEmbd, 1, 0.1));
    out.push(mat(`${b}.ffn_gate.weight`, [cfg.nEmbd, cfg.nFf]));
    out.push(mat(`${b}.ffn_up.weight`, [cfg.nEmbd, cfg.nFf]));
    out.push(mat(`${b}.ffn_down.weight`, [cfg.nFf, cfg.nEmbd], residualStd));
  }
  out.push(vec("output_norm.weight", cfg.nEmbd, 1, 0.1));
  if (!cfg.tiedEmbeddings) out.push(mat("output.weight", [cfg.nEmbd, nVocab]));
  return out;
}

/** Total parameter count of the model `writeSyntheticModel` would write. */
export function randomModelParamCount(cfg: SyntheticModelConfig): number {
  const nVocab = (cfg.tokenizer ?? chatmlTokenizer()).tokens.length;
  return plan(cfg, nVocab).reduce((s, t) => s + t.ne.reduce((a, b) => a * b, 1), 0);
}

/** 32-bit FNV-1a, to give each tensor its own PRNG stream. */
function hash32(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** sfc32 uniform generator in [0, 1), seeded through splitmix32. */
function makeUniform(seed: number): () => number {
  let s = seed >>> 0;
  const split = (): number => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = split();
  let b = split();
  let c = split();
  let d = split();
  return () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
}

const CHUNK = 1 << 18;

/** Chunks of N(mean, std) values (Box-Muller), deterministic in (seed, name). */
function* normalChunks(total: number, mean: number, std: number, seed: number): Generator<Float32Array> {
  const u = makeUniform(seed);
  let spare: number | undefined;
  for (let done = 0; done < total; done += CHUNK) {
    const out = new Float32Array(Math.min(CHUNK, total - done));
    for (let i = 0; i < out.length; i++) {
      let z: number;
      if (spare !== undefined) {
        z = spare;
        spare = undefined;
      } else {
        const r = Math.sqrt(-2 * Math.log(1 - u()));
        const th = 2 * Math.PI * u();
        z = r * Math.cos(th);
        spare = r * Math.sin(th);
      }
      out[i] = mean + std * z;
    }
    yield out;
  }
}

/** Writes a random-weight model that llama.cpp loads with the given architecture. */
export async function writeSyntheticModel(path: string, cfg: SyntheticModelConfig): Promise<void> {
  validate(cfg);
  const tok = cfg.tokenizer ?? chatmlTokenizer();
  const arch = cfg.arch;
  const headDim = cfg.nEmbd / cfg.nHead;
  const w = new GgufWriter();
  w.setString("general.architecture", arch);
  w.setString("general.name", cfg.name ?? `synthetic-${arch}`);
  w.setU32("general.quantization_version", 2);
  // llama_ftype: 0 = ALL_F32, 1 = MOSTLY_F16.
  w.setU32("general.file_type", cfg.type === "f16" ? 1 : 0);
  w.setU32(`${arch}.vocab_size`, tok.tokens.length);
  w.setU32(`${arch}.context_length`, cfg.contextLength);
  w.setU32(`${arch}.embedding_length`, cfg.nEmbd);
  w.setU32(`${arch}.block_count`, cfg.nLayer);
  w.setU32(`${arch}.feed_forward_length`, cfg.nFf);
  w.setU32(`${arch}.attention.head_count`, cfg.nHead);
  w.setU32(`${arch}.attention.head_count_kv`, cfg.nHeadKv);
  w.setU32(`${arch}.rope.dimension_count`, headDim);
  w.setF32(`${arch}.rope.freq_base`, cfg.ropeFreqBase ?? (arch === "qwen2" ? 1_000_000 : 10_000));
  w.setF32(`${arch}.attention.layer_norm_rms_epsilon`, cfg.rmsEps ?? (arch === "qwen2" ? 1e-6 : 1e-5));
  writeByteBpeTokenizer(w, tok);

  const matType = cfg.type === "f16" ? GgmlType.F16 : GgmlType.F32;
  for (const t of plan(cfg, tok.tokens.length)) {
    const total = t.ne.reduce((a, b) => a * b, 1);
    const seed = hash32(t.name, cfg.seed);
    w.addTensor(t.name, t.ne, () => normalChunks(total, t.mean, t.std, seed), t.matrix ? matType : GgmlType.F32);
  }
  await w.write(path);
}
