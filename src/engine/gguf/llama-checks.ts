/**
 * The load-time GGML_ASSERTs of the pinned llama.cpp that a GGUF file can trip, checked in
 * TypeScript first: an assert aborts the whole process (every request of a server at once) and
 * cannot be caught. Each check names the llama.cpp line it stands for and the field at fault.
 * What llama.cpp itself refuses with an exception (wrong key types, missing keys, bad shapes) is
 * left to it: those come back as a failed load, which NativeModel reports as E_BAD_MODEL.
 */
import { PersonaError } from "../../errors.js";
import { type GgufFile, type GgufKv } from "./reader.js";
import { GgmlType, GgufValueType } from "./types.js";

/** llama-hparams.h */
export const LLAMA_MAX_LAYERS = 512;
export const LLAMA_MAX_EXPERTS = 1024;
/** ggml-impl.h: a mapped tensor's address must be a multiple of this. */
export const TENSOR_ALIGNMENT = 32;
/**
 * tokenizer.ggml.model values whose tokenizers were checked against the asserts (BPE and
 * SentencePiece, what chat models use). The others (bert, t5, rwkv, plamo2, …) are refused:
 * their tokenizers crash on inputs the fuzzer found (a segfault in the t5 one) and no
 * persona-vectors command works with encoder-only or encoder-decoder models anyway.
 */
export const SUPPORTED_TOKENIZERS: readonly string[] = ["gpt2", "llama", "gemma4"];
/** Architectures without attention heads (recurrent models, vocoders): head_count 0 is normal there. */
const ATTENTION_FREE = new Set(["mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "wavtokenizer-dec", "clip"]);
/** MoE architectures whose loaders assert n_expert > 0 and n_expert_used > 0. */
const MOE_ONLY = new Set(["bailingmoe2", "glm4moe", "grovemoe", "llada-moe", "smallthinker", "lfm2moe"]);
/** llama-model.cpp LLAMA_ROPE_SCALING_TYPES. */
const ROPE_SCALING_TYPES = new Set(["none", "linear", "yarn", "longrope"]);

/**
 * Architectures whose graph (src/models/<arch>.cpp of the pinned release) asserts that the head
 * size it uses, attention.value_length, equals attention.key_length
 * (`GGML_ASSERT(n_embd_head == hparams.n_embd_head_k())`), and those that also assert it equals
 * rope.dimension_count (`GGML_ASSERT(n_embd_head == n_rot)`). Loading checks neither (only llama,
 * deci, falcon and llama-embed refuse a wrong n_rot), so such a file loads and aborts when the
 * first context builds its graph. Listed from the source by mapping llama-model.cpp's
 * architecture switch to the model files that hold each assert; lfm2 and lfm2moe assert the
 * same (n_embd_k_gqa == n_embd_v_gqa) while loading their tensors.
 */
const HEAD_SIZES_EQUAL = new Set([
  "afmoe", "apertus", "arcee", "arctic", "baichuan", "bailingmoe2", "bert", "bitnet", "bloom", "chameleon", "chatglm",
  "codeshell", "cogvlm", "cohere2", "cohere2moe", "command-r", "dbrx", "deci", "deepseek", "deepseek4", "dflash",
  "dots1", "dream", "eagle3", "ernie4_5", "ernie4_5-moe", "eurobert", "exaone", "exaone-moe", "exaone4", "falcon",
  "glm4", "glm4moe", "gpt2", "gptneox", "granite", "granite_swa", "granitehybrid", "graniteswitch", "grok",
  "grovemoe", "hunyuan-moe", "hunyuan_vl", "hy_v3", "internlm2", "jais", "jais2", "laguna", "lfm2", "lfm2moe", "llada", "llada-moe",
  "llama", "llama4", "maincoder", "mellum", "minimax-01", "minimax-m2", "minimax-m3", "mistral3", "modern-bert",
  "mpt", "muse-glimmer", "nanbeige", "nemotron", "nemotron_h", "nemotron_h_moe", "neo-bert", "olmo", "olmo2", "olmoe",
  "openelm", "orion", "paddleocr", "pangu-embedded", "phi2", "phi3", "plamo", "pockettts", "qwen", "qwen2",
  "qwen2moe", "qwen2vl", "qwen3", "qwen35", "qwen35moe", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe", "qwen4exp",
  "refact", "rnd1", "seed_oss", "smallthinker", "smollm3", "stablelm", "starcoder", "starcoder2", "t5", "talkie",
  "xverse",
]);
const ROPE_IS_HEAD_SIZE = new Set([
  "apertus", "arcee", "arctic", "baichuan", "chameleon", "codeshell", "cogvlm", "cohere2moe", "dbrx", "deci",
  "deepseek", "dots1", "dream", "ernie4_5", "ernie4_5-moe", "exaone", "exaone-moe", "exaone4", "falcon", "granite",
  "granite_swa", "graniteswitch", "grok", "grovemoe", "hunyuan-moe", "hunyuan_vl", "hy_v3", "internlm2", "jais2",
  "llada", "llada-moe", "llama", "llama4", "maincoder", "mellum", "minimax-01", "minimax-m2", "mistral3", "nemotron",
  "olmo", "olmo2", "olmoe", "orion", "paddleocr", "pangu-embedded", "plamo", "pockettts", "qwen2", "qwen2moe",
  "qwen2vl", "qwen3", "qwen3moe", "qwen3vl", "qwen3vlmoe", "rnd1", "seed_oss", "smallthinker", "smollm3",
  "starcoder2", "talkie", "xverse",
]);

export interface LlamaLoadChecks {
  /** llama_model_params.vocab_only: hyperparameters and tensors are not read. */
  vocabOnly: boolean;
  /** The weights are mapped from the file rather than copied into allocated buffers. */
  mmap: boolean;
}

function refuse(file: GgufFile, msg: string): PersonaError {
  return new PersonaError("E_BAD_MODEL", `${file.path}: ${msg}; llama.cpp would crash on it`);
}

/** A scalar llama.cpp reads as uint32 (it refuses other types itself, so those are skipped here). */
function u32(file: GgufFile, key: string): number | undefined {
  const e = file.kv.get(key);
  return e?.type === GgufValueType.UINT32 ? (e.value as number) : undefined;
}

/**
 * Per-layer values of a key llama.cpp reads with get_key_or_arr (a u32 for every layer, or an
 * array of exactly n_layer int/bool items), as it would see them; undefined when it would throw.
 */
function perLayer(e: GgufKv | undefined, nLayer: number): number[] | undefined {
  if (!e) return undefined;
  if (e.type === GgufValueType.UINT32) return new Array<number>(nLayer).fill(e.value as number);
  if (e.type !== GgufValueType.ARRAY || typeof e.value !== "object") return undefined;
  const a = e.value;
  if (a.length !== nLayer || a.items.length !== nLayer) return undefined;
  if (a.itemType === GgufValueType.BOOL) return a.items.map((v) => (v ? 1 : 0));
  if (a.itemType === GgufValueType.UINT32) return a.items as number[];
  if (a.itemType === GgufValueType.INT32) return (a.items as number[]).map((v) => v >>> 0);
  return undefined;
}

/**
 * Throws E_BAD_MODEL, naming the field, for a file that would trip a load-time assert. The file
 * must have been read with all array items (readGguf without maxArrayItems).
 */
export function checkLlamaLoad(file: GgufFile, opts: LlamaLoadChecks): void {
  checkVocab(file);
  if (opts.vocabOnly) return;
  checkHparams(file);
  checkTensorTypes(file);
  if (opts.mmap) checkMappedAlignment(file);
}

function checkVocab(file: GgufFile): void {
  const model = file.kv.get("tokenizer.ggml.model")?.value;
  // A "no_vocab" model gets no tokenizer: tokenize and detokenize then abort (llama-vocab.cpp:3375, 3712).
  if (model === "no_vocab" || model === "none") {
    throw refuse(file, `tokenizer.ggml.model is "${model}": the model has no vocabulary to tokenize with`);
  }
  if (typeof model === "string" && !SUPPORTED_TOKENIZERS.includes(model)) {
    throw new PersonaError(
      "E_BAD_MODEL",
      `${file.path}: tokenizer.ggml.model is ${JSON.stringify(model)}; persona-vectors supports ${SUPPORTED_TOKENIZERS.map((t) => `"${t}"`).join(", ")} vocabularies`,
    );
  }
  const list = file.kv.get("tokenizer.ggml.tokens");
  if (list?.type !== GgufValueType.ARRAY || typeof list.value !== "object" || list.value.itemType !== GgufValueType.STRING) return;
  if (list.value.items.length !== list.value.length) {
    throw new PersonaError("E_INTERNAL", "checkLlamaLoad needs the whole token list (read the file without maxArrayItems)");
  }
  // llama-vocab.cpp:2501 GGML_ASSERT(id_to_token.size() == token_to_id.size()): every token text
  // must be distinct, after empty ones are renamed "[EMPTY_<id>]".
  const seen = new Map<string, number>();
  const tokens = list.value.items as string[];
  for (let id = 0; id < tokens.length; id++) {
    const text = tokens[id] === "" ? `[EMPTY_${id}]` : tokens[id]!;
    const first = seen.get(text);
    if (first !== undefined) {
      throw refuse(file, `tokenizer.ggml.tokens holds ${JSON.stringify(text)} twice (ids ${first} and ${id})`);
    }
    seen.set(text, id);
  }
  // llama-vocab.cpp byte_to_token: SentencePiece falls back to one token per byte of text it
  // cannot match, looked up with token_to_id.at(), which throws through the C API (terminate).
  if (model === "llama") {
    for (let b = 0; b < 256; b++) {
      const hex = `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
      if (!seen.has(hex) && !(b < 0x80 && seen.has(String.fromCharCode(b)))) {
        throw refuse(file, `tokenizer.ggml.tokens lacks the byte token ${hex}, which a SentencePiece ("llama") vocabulary needs for every byte`);
      }
    }
  }
}

function checkHparams(file: GgufFile): void {
  const archKv = file.kv.get("general.architecture")?.value;
  if (typeof archKv !== "string") return;
  const key = (k: string) => `${archKv}.${k}`;
  // Everything below is llama-model.cpp load_hparams, in its order.
  const nLayer = u32(file, key("block_count"));
  if (nLayer === undefined) return; // missing or mistyped: llama.cpp throws
  if (nLayer < 1 || nLayer > LLAMA_MAX_LAYERS) {
    throw refuse(file, `${key("block_count")} is ${nLayer}, outside 1..${LLAMA_MAX_LAYERS}`);
  }
  const nextn = u32(file, key("nextn_predict_layers"));
  if (nextn !== undefined && nextn > nLayer) {
    throw refuse(file, `${key("nextn_predict_layers")} is ${nextn}, more than ${key("block_count")} ${nLayer}`);
  }
  const nExpert = u32(file, key("expert_count")) ?? 0;
  const used = perLayer(file.kv.get(key("expert_used_count")), nLayer) ?? [];
  const nGroups = u32(file, key("expert_group_count")) ?? 0;
  const groupUsed = u32(file, key("expert_group_used_count")) ?? 0;
  if (archKv === "wavtokenizer-dec") {
    for (const k of ["posnet.block_count", "convnext.block_count"]) {
      const n = u32(file, key(k));
      if (n !== undefined && n > nLayer) throw refuse(file, `${key(k)} is ${n}, more than ${key("block_count")} ${nLayer}`);
    }
  }
  // hunyuan models with a single expert are read as dense.
  const dense = (archKv === "hunyuan-vl" || archKv === "hunyuan-dense") && nExpert <= 1;
  const experts = dense ? 0 : nExpert;
  const usedMax = dense ? 0 : Math.max(0, ...used);
  if (experts > LLAMA_MAX_EXPERTS) throw refuse(file, `${key("expert_count")} is ${experts}, more than ${LLAMA_MAX_EXPERTS}`);
  if (usedMax > experts) throw refuse(file, `${key("expert_used_count")} is ${usedMax}, more than ${key("expert_count")} ${experts}`);
  if (experts > 0) {
    if (usedMax === 0) throw refuse(file, `${key("expert_used_count")} must be at least 1 when ${key("expert_count")} is ${experts}`);
    if (nGroups >= experts) throw refuse(file, `${key("expert_group_count")} is ${nGroups}, not less than ${key("expert_count")} ${experts}`);
    if (nGroups > 1) {
      if (experts % nGroups !== 0) throw refuse(file, `${key("expert_count")} ${experts} is not a multiple of ${key("expert_group_count")} ${nGroups}`);
      if (groupUsed === 0 || groupUsed >= nGroups) {
        throw refuse(file, `${key("expert_group_used_count")} is ${groupUsed}, outside 1..${nGroups - 1}`);
      }
    }
  } else if (nGroups !== 0) {
    throw refuse(file, `${key("expert_group_count")} is ${nGroups} in a model without experts`);
  }
  // Asserted while loading tensors (models/<arch>.cpp load_arch_tensors): these MoE architectures
  // need experts; lfm2moe for every layer from leading_dense_block_count (default 0) on.
  const moeLayers = archKv !== "lfm2moe" || (u32(file, key("leading_dense_block_count")) ?? 0) < nLayer;
  if (MOE_ONLY.has(archKv) && moeLayers && (experts === 0 || usedMax === 0)) {
    throw refuse(file, `an ${archKv} model needs ${key("expert_count")} and ${key("expert_used_count")} above 0`);
  }
  // jamba.cpp and granite-hybrid.cpp load_arch_tensors: GGML_ASSERT(2 * n_embd == d_inner).
  const nEmbd = u32(file, key("embedding_length"));
  const inner = u32(file, key("ssm.inner_size"));
  if ((archKv === "jamba" || archKv === "granitehybrid") && nEmbd !== undefined && inner !== undefined && inner !== 2 * nEmbd) {
    throw refuse(file, `${key("ssm.inner_size")} is ${inner}; the ${archKv} loader needs twice ${key("embedding_length")} (${2 * nEmbd})`);
  }
  // wavtokenizer-dec.cpp load_arch_tensors: GGML_ASSERT(hparams.posnet.n_embd == hparams.convnext.n_embd).
  const posnet = u32(file, key("posnet.embedding_length"));
  const convnext = u32(file, key("convnext.embedding_length"));
  if (archKv === "wavtokenizer-dec" && posnet !== undefined && convnext !== undefined && posnet !== convnext) {
    throw refuse(file, `${key("posnet.embedding_length")} (${posnet}) and ${key("convnext.embedding_length")} (${convnext}) must be equal`);
  }
  // Tensor shapes are derived as n_embd / n_head (and n_gqa as n_head / n_head_kv): an integer
  // division by zero (SIGFPE) when a transformer's scalar head count is missing or 0. Per-layer
  // arrays may hold 0 for attention-free layers of hybrid models, so only scalars are checked.
  if (!ATTENTION_FREE.has(archKv)) {
    const heads = file.kv.get(key("attention.head_count"));
    if (heads === undefined) throw refuse(file, `${key("attention.head_count")} is missing`);
    if (heads.type === GgufValueType.UINT32 && heads.value === 0) throw refuse(file, `${key("attention.head_count")} is 0`);
    const kvHeads = file.kv.get(key("attention.head_count_kv"));
    if (kvHeads?.type === GgufValueType.UINT32 && kvHeads.value === 0) throw refuse(file, `${key("attention.head_count_kv")} is 0`);
  }
  checkHeadSizes(file, archKv, nLayer);
  const scaling = file.kv.get(key("rope.scaling.type"));
  if (scaling?.type === GgufValueType.STRING && !ROPE_SCALING_TYPES.has(scaling.value as string)) {
    throw refuse(file, `${key("rope.scaling.type")} is ${JSON.stringify(scaling.value)}, not one of ${[...ROPE_SCALING_TYPES].join(", ")}`);
  }
}

/** The head sizes as load_hparams derives them (defaults n_embd / n_head), against the graph asserts above. */
function checkHeadSizes(file: GgufFile, arch: string, nLayer: number): void {
  if (!HEAD_SIZES_EQUAL.has(arch)) return;
  const key = (k: string) => `${arch}.${k}`;
  const nEmbd = u32(file, key("embedding_length"));
  const nHead = perLayer(file.kv.get(key("attention.head_count")), nLayer)?.[0];
  if (nEmbd === undefined || !nHead) return;
  const k = u32(file, key("attention.key_length")) ?? Math.floor(nEmbd / nHead);
  const v = u32(file, key("attention.value_length")) ?? Math.floor(nEmbd / nHead);
  if (k !== v) {
    throw refuse(file, `the ${arch} graph needs ${key("attention.key_length")} (${k}) and ${key("attention.value_length")} (${v}) equal`);
  }
  const rot = u32(file, key("rope.dimension_count")) ?? k;
  if (ROPE_IS_HEAD_SIZE.has(arch) && rot !== k) {
    throw refuse(file, `the ${arch} graph needs ${key("rope.dimension_count")} (${rot}) equal to the head size ${k}`);
  }
}

/**
 * Weight types ggml-cpu can multiply (type_traits_cpu entries with a vec_dot): a matrix of another
 * type (I8..I64, F64, the Q8_1/Q8_K intermediates) crashed the first decode (a segfault).
 */
const MATRIX_TYPES: ReadonlySet<number> = new Set(
  (["F32", "F16", "BF16", "Q1_0", "Q2_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "MXFP4", "NVFP4", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ3_S", "IQ2_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0"] as const).map((n) => GgmlType[n]),
);

/**
 * Tensor types the compute graph can use. One-dimensional weights (norms, biases, scales) enter
 * it as the second operand of a multiply or add, which ggml-cpu binary-ops.cpp:135 aborts on
 * unless it is F32, as every converter writes them.
 */
function checkTensorTypes(file: GgufFile): void {
  for (const t of file.tensors) {
    const oneDim = t.ne.slice(1).every((n) => n === 1);
    if (oneDim && t.type !== GgmlType.F32) {
      throw refuse(file, `one-dimensional tensor '${t.name}' is ${t.typeName}; norms and biases must be F32`);
    }
    if (!oneDim && !MATRIX_TYPES.has(t.type)) {
      throw refuse(file, `tensor '${t.name}' is ${t.typeName}, not a weight type llama.cpp can multiply`);
    }
  }
}

/** ggml-backend.cpp:2515: a mapped weight buffer must start on a 32-byte boundary. */
function checkMappedAlignment(file: GgufFile): void {
  for (const t of file.tensors) {
    const at = file.dataOffset + t.offset;
    if (at % TENSOR_ALIGNMENT !== 0) {
      throw refuse(
        file,
        `tensor '${t.name}' starts at byte ${at}, not a multiple of ${TENSOR_ALIGNMENT} (general.alignment is ${file.alignment})`,
      );
    }
  }
}
