/**
 * Every raw llama.cpp / ggml signature and struct layout the project uses, in one place.
 * Layouts follow the headers of llama.cpp "0.4.0" / ggml "0.23.0" as shipped in
 * @node-llama-cpp/*@3.21.1; `npm run check:ffi` compiles a C program against those headers and
 * compares sizeof/offsetof with the declarations here. Nothing outside src/engine imports koffi.
 */
import koffi from "koffi";
import { PersonaError } from "../../errors.js";
import type { LibraryPaths } from "./discover.js";

// ---- native handles ----------------------------------------------------------------------------

declare const nativeKind: unique symbol;
/**
 * An opaque pointer to a native `T` (koffi hands these out as external objects). Branded per C
 * type, so that passing a vocabulary where a model is expected fails to compile.
 */
export type Handle<T extends string> = { readonly [nativeKind]: T };
export type ModelHandle = Handle<"llama_model">;
export type VocabHandle = Handle<"llama_vocab">;
export type ContextHandle = Handle<"llama_context">;
export type LoraHandle = Handle<"llama_adapter_lora">;
export type MemoryHandle = Handle<"llama_memory">;
export type SamplerHandle = Handle<"llama_sampler">;
export type TensorHandle = Handle<"ggml_tensor">;
export type GgmlContextHandle = Handle<"ggml_context">;
export type GraphHandle = Handle<"ggml_cgraph">;
export type DeviceHandle = Handle<"ggml_backend_device">;
export type BackendHandle = Handle<"ggml_backend">;
export type BackendRegHandle = Handle<"ggml_backend_reg">;
export type SchedHandle = Handle<"ggml_backend_sched">;
export type OptContextHandle = Handle<"ggml_opt_context">;
export type OptResultHandle = Handle<"ggml_opt_result">;
export type BufferHandle = Handle<"ggml_backend_buffer">;
/** A C function pointer found at run time (ggml_backend_reg_get_proc_address). */
export type ProcHandle = Handle<"proc">;
export type ThreadpoolHandle = Handle<"ggml_threadpool">;
/** Our eval filter (eval-filter.c). */
export type EvalFilterHandle = Handle<"persona_eval_filter">;
/** A JS function registered with koffi as a C callback; valid until unregistered. */
export type CallbackHandle = Handle<"callback">;
/** Any native pointer, for the raw memory readers below. */
export type Ptr = Handle<string>;

export const GGML_TYPE_F32 = 0;
export const LLAMA_FLASH_ATTN_TYPE_AUTO = -1;
export const LLAMA_FLASH_ATTN_TYPE_DISABLED = 0;
export const LLAMA_LOAD_MODE_NONE = 0;
export const LLAMA_LOAD_MODE_MMAP = 1;

/** Offsets inside `struct ggml_tensor` (336 bytes on x86-64). */
export const GGML_TENSOR = { type: 0, ne: 16, nb: 48, data: 248, name: 256, nameLength: 64, size: 336 } as const;

const ggml_log_callback = koffi.proto("void ggml_log_callback(int level, const char *text, void *user_data)");
export const evalCallbackProto = koffi.proto("bool ggml_backend_sched_eval_callback(void *t, bool ask, void *user_data)");

export const llama_model_params = koffi.struct("llama_model_params", {
  devices: "void *",
  tensor_buft_overrides: "void *",
  n_gpu_layers: "int32_t",
  split_mode: "int32_t",
  load_mode: "int32_t",
  lazy_mode: "int32_t",
  main_gpu: "int32_t",
  tensor_split: "void *",
  progress_callback: "void *",
  progress_callback_user_data: "void *",
  kv_overrides: "void *",
  vocab_only: "bool",
  check_tensors: "bool",
  use_extra_bufts: "bool",
  no_host: "bool",
  no_alloc: "bool",
  load_mtp: "bool",
});

export const llama_context_params = koffi.struct("llama_context_params", {
  n_ctx: "uint32_t",
  n_batch: "uint32_t",
  n_ubatch: "uint32_t",
  n_seq_max: "uint32_t",
  n_rs_seq: "uint32_t",
  n_outputs_max: "uint32_t",
  n_outputs_max_per_seq: "uint32_t",
  n_threads: "int32_t",
  n_threads_batch: "int32_t",
  ctx_type: "int32_t",
  rope_scaling_type: "int32_t",
  pooling_type: "int32_t",
  attention_type: "int32_t",
  flash_attn_type: "int32_t",
  rope_freq_base: "float",
  rope_freq_scale: "float",
  yarn_ext_factor: "float",
  yarn_attn_factor: "float",
  yarn_beta_fast: "float",
  yarn_beta_slow: "float",
  yarn_orig_ctx: "uint32_t",
  defrag_thold: "float",
  cb_eval: "void *",
  cb_eval_user_data: "void *",
  type_k: "int32_t",
  type_v: "int32_t",
  abort_callback: "void *",
  abort_callback_data: "void *",
  embeddings: "bool",
  offload_kqv: "bool",
  no_perf: "bool",
  op_offload: "bool",
  swa_full: "bool",
  kv_unified: "bool",
  samplers: "void *",
  n_samplers: "size_t",
  ctx_other: "void *",
});

export const llama_batch = koffi.struct("llama_batch", {
  n_tokens: "int32_t",
  token: "void *",
  embd: "void *",
  pos: "void *",
  n_seq_id: "void *",
  seq_id: "void *",
  logits: "void *",
});

export const llama_sampler_chain_params = koffi.struct("llama_sampler_chain_params", { no_perf: "bool" });

export const llama_chat_message = koffi.struct("llama_chat_message", { role: "const char *", content: "const char *" });

// ---- training (ggml_opt_*) ---------------------------------------------------------------------

export const GGML_TYPE_I32 = 26;
export const GGML_OPT_OPTIMIZER_TYPE_ADAMW = 0;
export const GGML_OPT_OPTIMIZER_TYPE_SGD = 1;
/** `ggml_tensor.flags` (int32) and its "trainable parameter" bit, which ggml_set_param sets for good. */
export const GGML_TENSOR_FLAGS_OFFSET = 148;
export const GGML_TENSOR_FLAG_PARAM = 4;

/**
 * `ggml_opt_context.iter` (int64, AdamW's bias-correction step, 1-based) and its neighbours
 * `opt_period` (int32) and the three std::vectors before it (zero while empty), in the private
 * struct of ggml-opt.cpp (x86-64 libstdc++: 9 pointers, a 5000-byte std::mt19937, 3 enums,
 * 9 pointers, 2 bools, 3 vectors). ggml has no setter for the step; a resumed run sets it here,
 * after checking the layout on the fresh context (see NativeTrainer).
 */
export const GGML_OPT_CONTEXT = { vectors: 5168, vectorsBytes: 72, iter: 5240, optPeriod: 5248 } as const;

/** 28 bytes: returned by value from the get_opt_pars callback before every optimiser step. */
export const ggml_opt_optimizer_params = koffi.struct("ggml_opt_optimizer_params", {
  adamw: koffi.struct({ alpha: "float", beta1: "float", beta2: "float", eps: "float", wd: "float" }),
  sgd: koffi.struct({ alpha: "float", wd: "float" }),
});

export interface OptimizerParams {
  adamw: { alpha: number; beta1: number; beta2: number; eps: number; wd: number };
  sgd: { alpha: number; wd: number };
}

const getOptParsProto = koffi.proto("ggml_opt_optimizer_params ggml_opt_get_optimizer_params(void *userdata)");

/** Runs synchronously on the thread that calls ggml_opt_eval, before every optimiser step. */
export function registerOptParsCallback(current: () => OptimizerParams): CallbackHandle {
  return koffi.register(() => current(), koffi.pointer(getOptParsProto)) as unknown as CallbackHandle;
}

// ---- our own ggml training graph (ggml.h, ggml-backend.h, ggml-opt.h) ----------------------------

export const GGML_OPT_LOSS_TYPE_CROSS_ENTROPY = 2;
export const GGML_OPT_BUILD_TYPE_OPT = 30;
export const GGML_BACKEND_DEVICE_TYPE_CPU = 0;
export const GGML_ROPE_TYPE_NORMAL = 0;
export const GGML_ROPE_TYPE_NEOX = 2;

export const ggml_init_params = koffi.struct("ggml_init_params", { mem_size: "size_t", mem_buffer: "void *", no_alloc: "bool" });

export const ggml_opt_params = koffi.struct("ggml_opt_params", {
  backend_sched: "void *",
  ctx_compute: "void *",
  inputs: "void *",
  outputs: "void *",
  loss_type: "int32_t",
  build_type: "int32_t",
  opt_period: "int32_t",
  get_opt_pars: "void *",
  get_opt_pars_ud: "void *",
  optimizer: "int32_t",
});

export interface GgmlInitParams {
  mem_size: number;
  mem_buffer: null;
  no_alloc: boolean;
}

export interface GgmlOptParams {
  backend_sched: SchedHandle;
  ctx_compute: null;
  inputs: null;
  outputs: null;
  loss_type: number;
  build_type: number;
  opt_period: number;
  get_opt_pars: CallbackHandle;
  get_opt_pars_ud: null;
  optimizer: number;
}

const setNThreadsProto = koffi.proto("void ggml_backend_set_n_threads_t(void *backend, int n_threads)");

/** Calls a backend's `ggml_backend_set_n_threads` found through its registry (the CPU backend is a loaded module). */
export function callSetNThreads(fn: ProcHandle, backend: BackendHandle, n: number): void {
  koffi.call(fn, setNThreadsProto, backend, n);
}

// ---- CPU threadpool (ggml.h, ggml-cpu.h) -----------------------------------------------------------

/** ggml.h GGML_MAX_N_THREADS: the length of the cpumask and the most threads a pool may have. */
export const GGML_MAX_N_THREADS = 512;
/** enum ggml_sched_priority: GGML_SCHED_PRIO_LOW = -1, NORMAL = 0, MEDIUM, HIGH, REALTIME. */
export const GGML_SCHED_PRIO_LOW = -1;
export const GGML_SCHED_PRIO_NORMAL = 0;

export const ggml_threadpool_params = koffi.struct("ggml_threadpool_params", {
  cpumask: koffi.array("bool", GGML_MAX_N_THREADS),
  n_threads: "int32_t",
  prio: "int32_t",
  poll: "uint32_t",
  strict_cpu: "bool",
  paused: "bool",
});

export interface GgmlThreadpoolParams {
  cpumask: boolean[];
  n_threads: number;
  prio: number;
  /** 0: workers sleep on a condition variable between graphs; up to 100: they spin longer first. */
  poll: number;
  strict_cpu: boolean;
  paused: boolean;
}

// The CPU backend is a loaded module: these come through its registry (ggml_backend_reg_get_proc_address).
const threadpoolNewProto = koffi.proto("void *ggml_threadpool_new_t(ggml_threadpool_params *params)");
const threadpoolFreeProto = koffi.proto("void ggml_threadpool_free_t(void *threadpool)");

export function callThreadpoolNew(fn: ProcHandle, params: GgmlThreadpoolParams): ThreadpoolHandle | null {
  return koffi.call(fn, threadpoolNewProto, params) as ThreadpoolHandle | null;
}

export function callThreadpoolFree(fn: ProcHandle, pool: ThreadpoolHandle): void {
  koffi.call(fn, threadpoolFreeProto, pool);
}

/** Reads a pointer field whose C type the caller knows (`H`) from native memory. */
export function readPointer<H extends Ptr>(ptr: Ptr, offset: number): H | null {
  return koffi.decode(ptr, offset, "void *") as H | null;
}

export function writeInt32(ptr: Ptr, offset: number, value: number): void {
  koffi.encode(ptr, offset, "int32_t", value);
}

export function writeInt64(ptr: Ptr, offset: number, value: number): void {
  koffi.encode(ptr, offset, "int64_t", value);
}

/** A pointer's address, to key native objects in maps. */
export function addressOf(ptr: Ptr): bigint {
  return koffi.address(ptr);
}

// -------------------------------------------------------------------------------------------------

/** What the struct declarations claim, for the layout check script. */
export const DECLARED_LAYOUTS = {
  llama_model_params,
  llama_context_params,
  llama_batch,
  llama_sampler_chain_params,
  llama_chat_message,
  ggml_opt_optimizer_params,
  ggml_init_params,
  ggml_opt_params,
  ggml_threadpool_params,
} as const;

/** The fields we set; koffi fills the others from the defaults and passes them back unchanged. */
export interface LlamaModelParams {
  n_gpu_layers: number;
  load_mode: number;
  vocab_only: boolean;
}

export interface LlamaContextParams {
  n_ctx: number;
  n_batch: number;
  n_ubatch: number;
  n_seq_max: number;
  n_threads: number;
  n_threads_batch: number;
  flash_attn_type: number;
  /** A JS callback (registerEvalCallback), or the eval filter's C function with its filter as user data. */
  cb_eval: CallbackHandle | ProcHandle | null;
  cb_eval_user_data: EvalFilterHandle | null;
  type_k: number;
  type_v: number;
  kv_unified: boolean;
  no_perf: boolean;
}

export interface LlamaSamplerChainParams {
  no_perf: boolean;
}

export interface LlamaChatMessage {
  role: string;
  content: string;
}

export interface LlamaBatch {
  n_tokens: number;
  token: Ptr;
  embd: Ptr;
  pos: Ptr;
  n_seq_id: Ptr;
  seq_id: Ptr;
  logits: Ptr;
}

type NativeFn = (...args: never[]) => unknown;
type Library = ReturnType<typeof koffi.load>;

/**
 * Binds one C declaration under its TypeScript signature. This is the one place where koffi's
 * untyped functions meet the typed contract: a declaration and its signature sit side by side.
 */
function fn<F extends NativeFn>(lib: Library, declaration: string): F {
  return lib.func(declaration) as unknown as F;
}

/** Like `fn`, for a symbol some builds may not export: null where it is missing. */
function optionalFn<F extends NativeFn>(lib: Library, declaration: string): F | null {
  try {
    return fn<F>(lib, declaration);
  } catch {
    return null;
  }
}

/** `uint64_t` results: koffi gives a number when it is exact, else a bigint. */
type U64 = number | bigint;

function bind(paths: LibraryPaths) {
  const base = koffi.load(paths.ggmlBase);
  const ggml = koffi.load(paths.ggml);
  const llama = koffi.load(paths.llama);
  return {
    // ggml
    ggml_backend_load_all_from_path: fn<(dir: string) => void>(ggml, "void ggml_backend_load_all_from_path(const char *dir_path)"),
    ggml_backend_reg_count: fn<() => number>(ggml, "size_t ggml_backend_reg_count()"),
    ggml_backend_load: fn<(path: string) => BackendRegHandle | null>(ggml, "void *ggml_backend_load(const char *path)"),
    ggml_backend_tensor_get: fn<(tensor: TensorHandle, data: Float32Array, offset: number, size: number) => void>(
      base,
      "void ggml_backend_tensor_get(void *tensor, _Out_ float *data, size_t offset, size_t size)",
    ),
    ggml_backend_tensor_set: fn<(tensor: TensorHandle, data: ArrayBufferView, offset: number, size: number) => void>(
      base,
      "void ggml_backend_tensor_set(void *tensor, const void *data, size_t offset, size_t size)",
    ),
    ggml_log_set: fn<(cb: CallbackHandle, userData: null) => void>(base, "void ggml_log_set(ggml_log_callback *cb, void *user_data)"),

    // backend & logging
    llama_backend_init: fn<() => void>(llama, "void llama_backend_init()"),
    llama_log_set: fn<(cb: CallbackHandle, userData: null) => void>(llama, "void llama_log_set(ggml_log_callback *cb, void *user_data)"),
    llama_print_system_info: fn<() => string>(llama, "const char *llama_print_system_info()"),

    // model
    llama_model_default_params: fn<() => LlamaModelParams>(llama, "llama_model_params llama_model_default_params()"),
    llama_model_load_from_file: fn<(path: string, params: LlamaModelParams) => ModelHandle | null>(
      llama,
      "void *llama_model_load_from_file(const char *path, llama_model_params params)",
    ),
    llama_model_free: fn<(model: ModelHandle) => void>(llama, "void llama_model_free(void *model)"),
    llama_model_get_vocab: fn<(model: ModelHandle) => VocabHandle>(llama, "void *llama_model_get_vocab(void *model)"),
    llama_model_n_ctx_train: fn<(model: ModelHandle) => number>(llama, "int32_t llama_model_n_ctx_train(void *model)"),
    llama_model_n_embd: fn<(model: ModelHandle) => number>(llama, "int32_t llama_model_n_embd(void *model)"),
    llama_model_n_layer: fn<(model: ModelHandle) => number>(llama, "int32_t llama_model_n_layer(void *model)"),
    llama_model_n_head: fn<(model: ModelHandle) => number>(llama, "int32_t llama_model_n_head(void *model)"),
    llama_model_n_params: fn<(model: ModelHandle) => U64>(llama, "uint64_t llama_model_n_params(void *model)"),
    llama_model_chat_template: fn<(model: ModelHandle, name: string | null) => string | null>(
      llama,
      "const char *llama_model_chat_template(void *model, const char *name)",
    ),

    // LoRA adapters (freed with their model)
    llama_adapter_lora_init: fn<(model: ModelHandle, path: string) => LoraHandle | null>(
      llama,
      "void *llama_adapter_lora_init(void *model, const char *path_lora)",
    ),
    llama_set_adapters_lora: fn<(ctx: ContextHandle, adapters: readonly LoraHandle[], n: number, scales: Float32Array) => number>(
      llama,
      "int32_t llama_set_adapters_lora(void *ctx, void **adapters, size_t n_adapters, float *scales)",
    ),

    // vocab
    llama_vocab_n_tokens: fn<(vocab: VocabHandle) => number>(llama, "int32_t llama_vocab_n_tokens(void *vocab)"),
    llama_vocab_bos: fn<(vocab: VocabHandle) => number>(llama, "int32_t llama_vocab_bos(void *vocab)"),
    llama_vocab_eos: fn<(vocab: VocabHandle) => number>(llama, "int32_t llama_vocab_eos(void *vocab)"),
    llama_vocab_eot: fn<(vocab: VocabHandle) => number>(llama, "int32_t llama_vocab_eot(void *vocab)"),
    llama_vocab_is_eog: fn<(vocab: VocabHandle, token: number) => boolean>(llama, "bool llama_vocab_is_eog(void *vocab, int32_t token)"),
    llama_vocab_get_add_bos: fn<(vocab: VocabHandle) => boolean>(llama, "bool llama_vocab_get_add_bos(void *vocab)"),
    llama_vocab_get_add_eos: fn<(vocab: VocabHandle) => boolean>(llama, "bool llama_vocab_get_add_eos(void *vocab)"),
    llama_tokenize: fn<
      (vocab: VocabHandle, text: Uint8Array, textLen: number, tokens: Int32Array, nTokensMax: number, addSpecial: boolean, parseSpecial: boolean) => number
    >(
      llama,
      "int32_t llama_tokenize(void *vocab, const uint8_t *text, int32_t text_len, _Out_ int32_t *tokens, int32_t n_tokens_max, bool add_special, bool parse_special)",
    ),
    llama_token_to_piece: fn<(vocab: VocabHandle, token: number, buf: Uint8Array, length: number, lstrip: number, special: boolean) => number>(
      llama,
      "int32_t llama_token_to_piece(void *vocab, int32_t token, _Out_ uint8_t *buf, int32_t length, int32_t lstrip, bool special)",
    ),
    llama_detokenize: fn<
      (vocab: VocabHandle, tokens: Int32Array, nTokens: number, text: Uint8Array, textLenMax: number, removeSpecial: boolean, unparseSpecial: boolean) => number
    >(
      llama,
      "int32_t llama_detokenize(void *vocab, const int32_t *tokens, int32_t n_tokens, _Out_ uint8_t *text, int32_t text_len_max, bool remove_special, bool unparse_special)",
    ),
    llama_chat_apply_template: fn<
      (tmpl: string, chat: readonly LlamaChatMessage[], nMsg: number, addAss: boolean, buf: Uint8Array, length: number) => number
    >(
      llama,
      "int32_t llama_chat_apply_template(const char *tmpl, const llama_chat_message *chat, size_t n_msg, bool add_ass, _Out_ uint8_t *buf, int32_t length)",
    ),

    // context
    llama_context_default_params: fn<() => LlamaContextParams>(llama, "llama_context_params llama_context_default_params()"),
    llama_init_from_model: fn<(model: ModelHandle, params: LlamaContextParams) => ContextHandle | null>(
      llama,
      "void *llama_init_from_model(void *model, llama_context_params params)",
    ),
    llama_free: fn<(ctx: ContextHandle) => void>(llama, "void llama_free(void *ctx)"),
    llama_attach_threadpool: fn<(ctx: ContextHandle, pool: ThreadpoolHandle, poolBatch: ThreadpoolHandle) => void>(
      llama,
      "void llama_attach_threadpool(void *ctx, void *threadpool, void *threadpool_batch)",
    ),
    llama_detach_threadpool: fn<(ctx: ContextHandle) => void>(llama, "void llama_detach_threadpool(void *ctx)"),
    // `llama_context::get_sched() const`, a C++ method this build exports (Itanium ABI: `this` is
    // the first argument). With it a context switches its eval callback off for decodes that need
    // no hooks, instead of taking one JS call per graph node.
    llama_set_adapter_cvec: fn<(ctx: ContextHandle, data: Float32Array | null, len: number, nEmbd: number, ilStart: number, ilEnd: number) => number>(
      llama,
      "int32_t llama_set_adapter_cvec(void *ctx, const float *data, size_t len, int32_t n_embd, int32_t il_start, int32_t il_end)",
    ),
    llama_context_get_sched: optionalFn<(ctx: ContextHandle) => SchedHandle>(llama, "void *_ZNK13llama_context9get_schedEv(void *ctx)"),
    ggml_backend_sched_set_eval_callback: fn<(sched: SchedHandle, cb: CallbackHandle | ProcHandle | null, userData: EvalFilterHandle | null) => void>(
      base,
      "void ggml_backend_sched_set_eval_callback(void *sched, void *callback, void *user_data)",
    ),
    ggml_threadpool_params_default: fn<(nThreads: number) => GgmlThreadpoolParams>(
      base,
      "ggml_threadpool_params ggml_threadpool_params_default(int n_threads)",
    ),
    llama_get_memory: fn<(ctx: ContextHandle) => MemoryHandle>(llama, "void *llama_get_memory(void *ctx)"),
    llama_memory_clear: fn<(mem: MemoryHandle, data: boolean) => void>(llama, "void llama_memory_clear(void *mem, bool data)"),
    llama_memory_seq_rm: fn<(mem: MemoryHandle, seqId: number, p0: number, p1: number) => boolean>(
      llama,
      "bool llama_memory_seq_rm(void *mem, int32_t seq_id, int32_t p0, int32_t p1)",
    ),
    llama_memory_seq_cp: fn<(mem: MemoryHandle, seqIdSrc: number, seqIdDst: number, p0: number, p1: number) => void>(
      llama,
      "void llama_memory_seq_cp(void *mem, int32_t seq_id_src, int32_t seq_id_dst, int32_t p0, int32_t p1)",
    ),
    llama_memory_seq_pos_min: fn<(mem: MemoryHandle, seqId: number) => number>(llama, "int32_t llama_memory_seq_pos_min(void *mem, int32_t seq_id)"),
    llama_memory_seq_pos_max: fn<(mem: MemoryHandle, seqId: number) => number>(llama, "int32_t llama_memory_seq_pos_max(void *mem, int32_t seq_id)"),
    llama_batch_init: fn<(nTokens: number, embd: number, nSeqMax: number) => LlamaBatch>(
      llama,
      "llama_batch llama_batch_init(int32_t n_tokens, int32_t embd, int32_t n_seq_max)",
    ),
    llama_batch_free: fn<(batch: LlamaBatch) => void>(llama, "void llama_batch_free(llama_batch batch)"),
    llama_decode: fn<(ctx: ContextHandle, batch: LlamaBatch) => number>(llama, "int32_t llama_decode(void *ctx, llama_batch batch)"),
    llama_get_logits_ith: fn<(ctx: ContextHandle, i: number) => Ptr | null>(llama, "void *llama_get_logits_ith(void *ctx, int32_t i)"),

    // sampling
    llama_sampler_chain_default_params: fn<() => LlamaSamplerChainParams>(
      llama,
      "llama_sampler_chain_params llama_sampler_chain_default_params()",
    ),
    llama_sampler_chain_init: fn<(params: LlamaSamplerChainParams) => SamplerHandle>(
      llama,
      "void *llama_sampler_chain_init(llama_sampler_chain_params params)",
    ),
    llama_sampler_chain_add: fn<(chain: SamplerHandle, smpl: SamplerHandle) => void>(llama, "void llama_sampler_chain_add(void *chain, void *smpl)"),
    llama_sampler_init_greedy: fn<() => SamplerHandle | null>(llama, "void *llama_sampler_init_greedy()"),
    llama_sampler_init_dist: fn<(seed: number) => SamplerHandle | null>(llama, "void *llama_sampler_init_dist(uint32_t seed)"),
    llama_sampler_init_top_k: fn<(k: number) => SamplerHandle | null>(llama, "void *llama_sampler_init_top_k(int32_t k)"),
    llama_sampler_init_top_p: fn<(p: number, minKeep: number) => SamplerHandle | null>(llama, "void *llama_sampler_init_top_p(float p, size_t min_keep)"),
    llama_sampler_init_min_p: fn<(p: number, minKeep: number) => SamplerHandle | null>(llama, "void *llama_sampler_init_min_p(float p, size_t min_keep)"),
    llama_sampler_init_temp: fn<(t: number) => SamplerHandle | null>(llama, "void *llama_sampler_init_temp(float t)"),
    llama_sampler_sample: fn<(smpl: SamplerHandle, ctx: ContextHandle, idx: number) => number>(
      llama,
      "int32_t llama_sampler_sample(void *smpl, void *ctx, int32_t idx)",
    ),
    llama_sampler_free: fn<(smpl: SamplerHandle) => void>(llama, "void llama_sampler_free(void *smpl)"),

    // training: ggml_opt_* live in libggml-base
    llama_model_save_to_file: fn<(model: ModelHandle, path: string) => void>(llama, "void llama_model_save_to_file(void *model, const char *path)"),
    ggml_opt_result_init: fn<() => OptResultHandle>(base, "void *ggml_opt_result_init()"),
    ggml_opt_result_free: fn<(result: OptResultHandle) => void>(base, "void ggml_opt_result_free(void *result)"),
    ggml_opt_result_reset: fn<(result: OptResultHandle) => void>(base, "void ggml_opt_result_reset(void *result)"),
    ggml_opt_result_loss: fn<(result: OptResultHandle, loss: Float64Array, unc: Float64Array) => void>(
      base,
      "void ggml_opt_result_loss(void *result, _Out_ double *loss, _Out_ double *unc)",
    ),

    // our own training graph
    ggml_init: fn<(params: GgmlInitParams) => GgmlContextHandle | null>(base, "void *ggml_init(ggml_init_params params)"),
    ggml_free: fn<(ctx: GgmlContextHandle) => void>(base, "void ggml_free(void *ctx)"),
    ggml_tensor_overhead: fn<() => number>(base, "size_t ggml_tensor_overhead()"),
    ggml_new_tensor_1d: fn<(ctx: GgmlContextHandle, type: number, ne0: number) => TensorHandle>(
      base,
      "void *ggml_new_tensor_1d(void *ctx, int type, int64_t ne0)",
    ),
    ggml_new_tensor_4d: fn<(ctx: GgmlContextHandle, type: number, ne0: number, ne1: number, ne2: number, ne3: number) => TensorHandle>(
      base,
      "void *ggml_new_tensor_4d(void *ctx, int type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3)",
    ),
    ggml_set_param: fn<(tensor: TensorHandle) => void>(base, "void ggml_set_param(void *tensor)"),
    ggml_set_input: fn<(tensor: TensorHandle) => void>(base, "void ggml_set_input(void *tensor)"),
    ggml_graph_overhead_custom: fn<(size: number, grads: boolean) => number>(base, "size_t ggml_graph_overhead_custom(size_t size, bool grads)"),
    ggml_new_graph_custom: fn<(ctx: GgmlContextHandle, size: number, grads: boolean) => GraphHandle>(
      base,
      "void *ggml_new_graph_custom(void *ctx, size_t size, bool grads)",
    ),
    ggml_build_forward_expand: fn<(graph: GraphHandle, tensor: TensorHandle) => void>(base, "void ggml_build_forward_expand(void *cgraph, void *tensor)"),
    ggml_opt_prepare_alloc: fn<
      (opt: OptContextHandle, ctxCompute: GgmlContextHandle, graph: GraphHandle, inputs: TensorHandle, outputs: TensorHandle) => void
    >(base, "void ggml_opt_prepare_alloc(void *opt_ctx, void *ctx_compute, void *gf, void *inputs, void *outputs)"),
    ggml_get_rows: fn<(ctx: GgmlContextHandle, a: TensorHandle, b: TensorHandle) => TensorHandle>(base, "void *ggml_get_rows(void *ctx, void *a, void *b)"),
    ggml_rms_norm: fn<(ctx: GgmlContextHandle, a: TensorHandle, eps: number) => TensorHandle>(base, "void *ggml_rms_norm(void *ctx, void *a, float eps)"),
    ggml_mul: fn<(ctx: GgmlContextHandle, a: TensorHandle, b: TensorHandle) => TensorHandle>(base, "void *ggml_mul(void *ctx, void *a, void *b)"),
    ggml_add: fn<(ctx: GgmlContextHandle, a: TensorHandle, b: TensorHandle) => TensorHandle>(base, "void *ggml_add(void *ctx, void *a, void *b)"),
    ggml_backend_alloc_ctx_tensors: fn<(ctx: GgmlContextHandle, backend: BackendHandle) => BufferHandle>(
      base,
      "void *ggml_backend_alloc_ctx_tensors(void *ctx, void *backend)",
    ),
    ggml_backend_buffer_free: fn<(buffer: BufferHandle) => void>(base, "void ggml_backend_buffer_free(void *buffer)"),
    ggml_sub: fn<(ctx: GgmlContextHandle, a: TensorHandle, b: TensorHandle) => TensorHandle>(base, "void *ggml_sub(void *ctx, void *a, void *b)"),
    ggml_scale: fn<(ctx: GgmlContextHandle, a: TensorHandle, s: number) => TensorHandle>(base, "void *ggml_scale(void *ctx, void *a, float s)"),
    ggml_mul_mat: fn<(ctx: GgmlContextHandle, a: TensorHandle, b: TensorHandle) => TensorHandle>(base, "void *ggml_mul_mat(void *ctx, void *a, void *b)"),
    ggml_reshape_2d: fn<(ctx: GgmlContextHandle, a: TensorHandle, ne0: number, ne1: number) => TensorHandle>(
      base,
      "void *ggml_reshape_2d(void *ctx, void *a, int64_t ne0, int64_t ne1)",
    ),
    ggml_reshape_3d: fn<(ctx: GgmlContextHandle, a: TensorHandle, ne0: number, ne1: number, ne2: number) => TensorHandle>(
      base,
      "void *ggml_reshape_3d(void *ctx, void *a, int64_t ne0, int64_t ne1, int64_t ne2)",
    ),
    ggml_reshape_4d: fn<(ctx: GgmlContextHandle, a: TensorHandle, ne0: number, ne1: number, ne2: number, ne3: number) => TensorHandle>(
      base,
      "void *ggml_reshape_4d(void *ctx, void *a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3)",
    ),
    ggml_repeat_4d: fn<(ctx: GgmlContextHandle, a: TensorHandle, ne0: number, ne1: number, ne2: number, ne3: number) => TensorHandle>(
      base,
      "void *ggml_repeat_4d(void *ctx, void *a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3)",
    ),
    ggml_permute: fn<(ctx: GgmlContextHandle, a: TensorHandle, axis0: number, axis1: number, axis2: number, axis3: number) => TensorHandle>(
      base,
      "void *ggml_permute(void *ctx, void *a, int axis0, int axis1, int axis2, int axis3)",
    ),
    ggml_cont: fn<(ctx: GgmlContextHandle, a: TensorHandle) => TensorHandle>(base, "void *ggml_cont(void *ctx, void *a)"),
    ggml_rope_ext: fn<
      (
        ctx: GgmlContextHandle,
        a: TensorHandle,
        positions: TensorHandle,
        freqFactors: TensorHandle | null,
        nDims: number,
        mode: number,
        nCtxOrig: number,
        freqBase: number,
        freqScale: number,
        extFactor: number,
        attnFactor: number,
        betaFast: number,
        betaSlow: number,
      ) => TensorHandle
    >(
      base,
      "void *ggml_rope_ext(void *ctx, void *a, void *b, void *c, int n_dims, int mode, int n_ctx_orig, float freq_base, float freq_scale, float ext_factor, float attn_factor, float beta_fast, float beta_slow)",
    ),
    ggml_soft_max_ext: fn<(ctx: GgmlContextHandle, a: TensorHandle, mask: TensorHandle | null, scale: number, maxBias: number) => TensorHandle>(
      base,
      "void *ggml_soft_max_ext(void *ctx, void *a, void *mask, float scale, float max_bias)",
    ),
    ggml_silu: fn<(ctx: GgmlContextHandle, a: TensorHandle) => TensorHandle>(base, "void *ggml_silu(void *ctx, void *a)"),
    ggml_backend_dev_by_type: fn<(type: number) => DeviceHandle | null>(ggml, "void *ggml_backend_dev_by_type(int type)"),
    ggml_backend_dev_init: fn<(device: DeviceHandle, params: string | null) => BackendHandle | null>(
      base,
      "void *ggml_backend_dev_init(void *device, const char *params)",
    ),
    ggml_backend_dev_backend_reg: fn<(device: DeviceHandle) => BackendRegHandle>(base, "void *ggml_backend_dev_backend_reg(void *device)"),
    ggml_backend_reg_get_proc_address: fn<(reg: BackendRegHandle, name: string) => ProcHandle | null>(
      base,
      "void *ggml_backend_reg_get_proc_address(void *reg, const char *name)",
    ),
    ggml_backend_free: fn<(backend: BackendHandle) => void>(base, "void ggml_backend_free(void *backend)"),
    ggml_backend_sched_new: fn<
      (backends: readonly BackendHandle[], bufts: null, nBackends: number, graphSize: number, parallel: boolean, opOffload: boolean) => SchedHandle
    >(base, "void *ggml_backend_sched_new(void **backends, void **bufts, int n_backends, size_t graph_size, bool parallel, bool op_offload)"),
    ggml_backend_sched_free: fn<(sched: SchedHandle) => void>(base, "void ggml_backend_sched_free(void *sched)"),
    ggml_opt_init: fn<(params: GgmlOptParams) => OptContextHandle | null>(base, "void *ggml_opt_init(ggml_opt_params params)"),
    ggml_opt_free: fn<(opt: OptContextHandle) => void>(base, "void ggml_opt_free(void *opt_ctx)"),
    ggml_opt_alloc: fn<(opt: OptContextHandle, backward: boolean) => void>(base, "void ggml_opt_alloc(void *opt_ctx, bool backward)"),
    ggml_opt_reset: fn<(opt: OptContextHandle, optimizer: boolean) => void>(base, "void ggml_opt_reset(void *opt_ctx, bool optimizer)"),
    ggml_opt_eval: fn<(opt: OptContextHandle, result: OptResultHandle) => void>(base, "void ggml_opt_eval(void *opt_ctx, void *result)"),
    ggml_opt_labels: fn<(opt: OptContextHandle) => TensorHandle>(base, "void *ggml_opt_labels(void *opt_ctx)"),
  };
}

/** The whole native surface, typed: every function the project calls, by its C name. */
export type LlamaApi = ReturnType<typeof bind>;

let loaded: { api: LlamaApi; paths: LibraryPaths } | undefined;
let logCallback: CallbackHandle | undefined;

/**
 * Loads the three libraries once per thread, loads the backends from the same folder (or the
 * self-built CPU backend) and routes
 * llama.cpp's log lines through `onLog` (dropped when absent, so the engine is quiet by default).
 */
export function loadLlama(paths: LibraryPaths, onLog?: (level: number, text: string) => void): LlamaApi {
  if (loaded) {
    if (loaded.paths.binsDir !== paths.binsDir || loaded.paths.cpuBackend !== paths.cpuBackend) {
      throw new PersonaError("E_NATIVE", `llama.cpp is already loaded from ${loaded.paths.binsDir}${loaded.paths.cpuBackend ? ` with ${loaded.paths.cpuBackend}` : ""}`);
    }
    return loaded.api;
  }
  const api = bind(paths);
  // Registered for the thread's lifetime: llama.cpp keeps the pointer and may log at any time.
  const cb = koffi.register((level: number, text: string) => onLog?.(level, text), koffi.pointer(ggml_log_callback)) as unknown as CallbackHandle;
  logCallback = cb;
  api.llama_log_set(cb, null);
  api.ggml_log_set(cb, null);
  // The backend registry belongs to the process: another engine's thread may have filled it.
  if (api.ggml_backend_reg_count() === 0) {
    if (paths.cpuBackend === undefined) {
      api.ggml_backend_load_all_from_path(paths.binsDir); // picks the best CPU variant
    } else if (isNull(api.ggml_backend_load(paths.cpuBackend))) {
      throw new PersonaError("E_NO_LIBRARY", `llama.cpp could not load the CPU backend ${paths.cpuBackend}`);
    }
  }
  api.llama_backend_init();
  loaded = { api, paths };
  return api;
}

/**
 * llama.cpp's log callback is one per process, but ours is a JS function of one worker thread: with
 * several engines, each claims it before every request, and an engine going away leaves a native
 * no-op behind (a callback of an exited thread would crash the next log line of any other engine).
 */
export function claimLogs(): void {
  if (!loaded || !logCallback) return;
  loaded.api.llama_log_set(logCallback, null);
  loaded.api.ggml_log_set(logCallback, null);
}

export function releaseLogs(): void {
  if (!loaded || process.platform !== "linux") return;
  // getpid ignores the (level, text, user_data) arguments: a callback that does nothing.
  const dlsym = fn<(handle: null, symbol: string) => ProcHandle>(koffi.load("libc.so.6"), "void *dlsym(void *handle, const char *symbol)");
  const noop = dlsym(null, "getpid"); // RTLD_DEFAULT
  type SetLog = (cb: ProcHandle, userData: null) => void;
  const setLlama = fn<SetLog>(koffi.load(loaded.paths.llama), "void llama_log_set(void *cb, void *user_data)");
  const setGgml = fn<SetLog>(koffi.load(loaded.paths.ggmlBase), "void ggml_log_set(void *cb, void *user_data)");
  setLlama(noop, null);
  setGgml(noop, null);
}

export function registerEvalCallback(onEval: (tensor: TensorHandle, ask: boolean) => boolean): CallbackHandle {
  return koffi.register((t: TensorHandle, ask: boolean) => onEval(t, ask), koffi.pointer(evalCallbackProto)) as unknown as CallbackHandle;
}

// ---- the eval filter (src/engine/ffi/eval-filter.c, built by npm run build:hooks) -----------------

/** The eval-filter.c version these declarations are for (PERSONA_EVAL_FILTER_VERSION). */
export const EVAL_FILTER_VERSION = 1;

const onTensorProto = koffi.proto("bool persona_on_tensor(void *tensor, int32_t layer)");

function bindEvalFilter(file: string) {
  const lib = koffi.load(file);
  return {
    persona_eval_filter_version: fn<() => number>(lib, "int32_t persona_eval_filter_version()"),
    persona_eval_filter_new: fn<
      (names: Uint8Array, nNames: number, nameLen: number, nameOffset: number, onTensor: CallbackHandle) => EvalFilterHandle | null
    >(lib, "void *persona_eval_filter_new(const uint8_t *names, int32_t n_names, int32_t name_len, int32_t name_offset, void *on_tensor)"),
    persona_eval_filter_free: fn<(filter: EvalFilterHandle) => void>(lib, "void persona_eval_filter_free(void *filter)"),
    persona_eval_filter_wanted: fn<(filter: EvalFilterHandle) => Ptr>(lib, "void *persona_eval_filter_wanted(void *filter)"),
    persona_eval_filter_callback: fn<() => ProcHandle>(lib, "void *persona_eval_filter_callback()"),
  };
}

export type EvalFilterApi = ReturnType<typeof bindEvalFilter>;

const evalFilters = new Map<string, EvalFilterApi>();

/** Loads the eval filter library (once per thread); E_NO_LIBRARY when it does not load or is of another version. */
export function loadEvalFilter(file: string): EvalFilterApi {
  const known = evalFilters.get(file);
  if (known) return known;
  const rebuild = "npm run build:hooks rebuilds it";
  let api: EvalFilterApi;
  try {
    api = bindEvalFilter(file);
  } catch (e) {
    throw new PersonaError("E_NO_LIBRARY", `the eval filter ${file} does not load (${(e as Error).message}); ${rebuild}`);
  }
  const version = api.persona_eval_filter_version();
  if (version !== EVAL_FILTER_VERSION) {
    throw new PersonaError("E_NO_LIBRARY", `the eval filter ${file} is version ${version}, this engine needs ${EVAL_FILTER_VERSION}; ${rebuild}`);
  }
  evalFilters.set(file, api);
  return api;
}

/** The JS half of the eval filter: called for the tensors it was told to hook, with their layer. */
export function registerTensorCallback(onTensor: (tensor: TensorHandle, layer: number) => boolean): CallbackHandle {
  return koffi.register((t: TensorHandle, layer: number) => onTensor(t, layer), koffi.pointer(onTensorProto)) as unknown as CallbackHandle;
}

export function unregisterCallback(handle: CallbackHandle): void {
  koffi.unregister(handle as unknown as bigint);
}

/** Reads a NUL-terminated char[len] field of a native struct. */
export function readCString(ptr: Ptr, offset: number, len: number): string {
  return koffi.decode(ptr, offset, "char", len) as string;
}

export function readInt64(ptr: Ptr, offset: number): number {
  return Number(koffi.decode(ptr, offset, "int64_t") as number | bigint);
}

export function readInt32(ptr: Ptr, offset: number): number {
  return koffi.decode(ptr, offset, "int32_t") as number;
}

/** A zero-copy view of native memory; invalid after the memory is freed or rewritten. */
export function viewFloat32(ptr: Ptr, count: number): Float32Array {
  return new Float32Array(koffi.view(ptr, count * 4));
}

export function viewInt32(ptr: Ptr, count: number): Int32Array {
  return new Int32Array(koffi.view(ptr, count * 4));
}

export function viewUint8(ptr: Ptr, count: number): Uint8Array {
  return new Uint8Array(koffi.view(ptr, count));
}

export function viewInt8(ptr: Ptr, count: number): Int8Array {
  return new Int8Array(koffi.view(ptr, count));
}

/** Follows element `index` of a `T **` array and views `count` int32 at its target. */
export function viewInt32Indirect(ptrArray: Ptr, index: number, count: number): Int32Array {
  return new Int32Array(koffi.view(koffi.decode(ptrArray, index * 8, "void *") as Ptr, count * 4));
}

export function isNull(ptr: Ptr | null | undefined): ptr is null | undefined {
  return ptr === null || ptr === undefined || koffi.address(ptr) === 0n;
}

/** A declared struct's size and field offsets, as koffi lays them out. */
export function declaredLayout(t: unknown): { size: number; offsets: Record<string, number> } {
  const info = koffi.type(t as Parameters<typeof koffi.type>[0]) as unknown as {
    size: number;
    members: Record<string, { offset: number }>;
  };
  return { size: info.size, offsets: Object.fromEntries(Object.entries(info.members).map(([k, m]) => [k, m.offset])) };
}
