/**
 * One loaded llama_model: metadata, vocabulary, tokenizer and llama.cpp's built-in chat
 * templates. Lives in the engine worker; the file is validated in TypeScript before llama.cpp
 * sees it, because a malformed file can abort the process from inside native code.
 */
import { stat } from "node:fs/promises";
import { PersonaError } from "../../errors.js";
import { checkLlamaLoad } from "../gguf/llama-checks.js";
import { getNumber, getString, readGguf } from "../gguf/reader.js";
import { LLAMA_LOAD_MODE_MMAP, LLAMA_LOAD_MODE_NONE, isNull, type LlamaApi, type LoraHandle, type ModelHandle, type VocabHandle } from "../ffi/llama.js";
import { type LoraAdapter, checkLoraFile } from "../lora.js";
import type { ChatMessage, ModelInfo } from "../types.js";

export interface NativeModelOptions {
  /** Layers offloaded to the GPU; -1 = all. Ignored by the CPU build. */
  gpuLayers: number;
  /** Load without mmap (needed for training: the optimiser writes the weights). */
  noMmap: boolean;
  /** Metadata and vocabulary only: no weights, no inference. */
  vocabOnly: boolean;
}

const decoder = new TextDecoder("utf-8", { fatal: false });
const encoder = new TextEncoder();

export class NativeModel {
  readonly handle: ModelHandle;
  readonly vocab: VocabHandle;
  readonly info: ModelInfo;
  /** Token ids llama.cpp treats as end of generation. */
  readonly eogTokens: Int32Array;
  readonly vocabOnly: boolean;
  /** Applied to each context at creation (see NativeContext). */
  readonly loras: { handle: LoraHandle; scale: number }[] = [];
  private freed = false;

  private constructor(
    readonly api: LlamaApi,
    handle: ModelHandle,
    info: ModelInfo,
    private readonly recentErrors: () => string[],
    vocabOnly: boolean,
  ) {
    this.handle = handle;
    this.vocabOnly = vocabOnly;
    this.vocab = api.llama_model_get_vocab(handle);
    this.info = info;
    const eog: number[] = [];
    for (let t = 0; t < info.nVocab; t++) if (api.llama_vocab_is_eog(this.vocab, t)) eog.push(t);
    this.eogTokens = Int32Array.from(eog);
  }

  static async load(
    api: LlamaApi,
    path: string,
    options: NativeModelOptions,
    recentErrors: () => string[],
  ): Promise<NativeModel> {
    // Throws E_NOT_FOUND / E_BAD_MODEL with a precise reason; the whole vocabulary is read because
    // some of llama.cpp's asserts are about it (see llama-checks.ts).
    const gguf = await readGguf(path);
    checkLlamaLoad(gguf, { vocabOnly: options.vocabOnly, mmap: !options.noMmap });
    const arch = getString(gguf, "general.architecture") ?? "";
    if (!arch) throw new PersonaError("E_BAD_MODEL", `${path} has no general.architecture`);
    const generalType = getString(gguf, "general.type");
    if (generalType !== undefined && generalType !== "model") {
      throw new PersonaError("E_BAD_MODEL", `${path} is a GGUF of type "${generalType}", not a model`);
    }
    const params = api.llama_model_default_params();
    params.n_gpu_layers = options.gpuLayers;
    params.load_mode = options.noMmap ? LLAMA_LOAD_MODE_NONE : LLAMA_LOAD_MODE_MMAP;
    params.vocab_only = options.vocabOnly;
    const before = recentErrors().length;
    const handle = api.llama_model_load_from_file(path, params);
    if (isNull(handle)) {
      const log = recentErrors().slice(before);
      throw new PersonaError(
        "E_BAD_MODEL",
        `llama.cpp could not load ${path} (architecture "${arch}")` + (log.length ? `: ${log.slice(-3).join(" | ")}` : ""),
      );
    }
    const vocab = api.llama_model_get_vocab(handle);
    // llama-vocab.cpp tokenize asserts that a vocabulary which adds BOS/EOS has one; which it adds
    // depends on defaults per tokenizer and pre-tokenizer, so ask the loaded vocabulary.
    for (const [what, adds, id, key] of [
      ["BOS", api.llama_vocab_get_add_bos(vocab), api.llama_vocab_bos(vocab), "bos"],
      ["EOS", api.llama_vocab_get_add_eos(vocab), api.llama_vocab_eos(vocab), "eos"],
    ] as const) {
      if (adds && id < 0) {
        api.llama_model_free(handle);
        throw new PersonaError(
          "E_BAD_MODEL",
          `${path}: tokenizer.ggml.add_${key}_token is on but the vocabulary has no ${what} token (tokenizer.ggml.${key}_token_id missing or out of range); llama.cpp would abort on it`,
        );
      }
    }
    const template = api.llama_model_chat_template(handle, null);
    const size = (await stat(path)).size;
    // Vocabulary-only models have no layer hyperparameters in llama.cpp (asking aborts): use the file's.
    const hp = options.vocabOnly
      ? {
          nLayer: getNumber(gguf, `${arch}.block_count`) ?? 0,
          nEmbd: getNumber(gguf, `${arch}.embedding_length`) ?? 0,
          nHead: getNumber(gguf, `${arch}.attention.head_count`) ?? 0,
          nCtxTrain: getNumber(gguf, `${arch}.context_length`) ?? 0,
          nParams: 0,
        }
      : {
          nLayer: api.llama_model_n_layer(handle),
          nEmbd: api.llama_model_n_embd(handle),
          nHead: api.llama_model_n_head(handle),
          nCtxTrain: api.llama_model_n_ctx_train(handle),
          nParams: Number(api.llama_model_n_params(handle)),
        };
    const info: ModelInfo = {
      path,
      name: getString(gguf, "general.name") ?? path.split(/[\\/]/).pop()!,
      architecture: arch,
      ...hp,
      nVocab: api.llama_vocab_n_tokens(vocab),
      fileSize: size,
      chatTemplate: template ?? null,
      bos: api.llama_vocab_bos(vocab),
      eos: api.llama_vocab_eos(vocab),
      eot: api.llama_vocab_eot(vocab),
      addBos: api.llama_vocab_get_add_bos(vocab),
      bosText: "",
      eosText: "",
      adapters: [],
    };
    const model = new NativeModel(api, handle, info, recentErrors, options.vocabOnly);
    info.bosText = info.bos >= 0 ? model.tokenToPiece(info.bos, true) : "";
    info.eosText = info.eos >= 0 ? model.tokenToPiece(info.eos, true) : "";
    return model;
  }

  /** Loads LoRA adapters, each checked against this model's GGUF first (see engine/lora.ts). */
  async addLoras(adapters: readonly LoraAdapter[]): Promise<void> {
    this.ensureAlive();
    if (adapters.length === 0) return;
    if (this.vocabOnly) throw new PersonaError("E_BAD_INPUT", "LoRA adapters need a fully loaded model, not a vocabulary-only one");
    const base = await readGguf(this.info.path, { maxArrayItems: 0 });
    const applied: { path: string; scale: number }[] = [...this.info.adapters];
    for (const a of adapters) {
      const scale = a.scale ?? 1;
      if (typeof a.path !== "string" || a.path === "") throw new PersonaError("E_BAD_INPUT", "a LoRA adapter needs a path");
      if (!Number.isFinite(scale)) throw new PersonaError("E_BAD_INPUT", `LoRA scale ${scale} for ${a.path} is not a finite number`);
      await checkLoraFile(a.path, base);
      const before = this.recentErrors().length;
      const handle = this.api.llama_adapter_lora_init(this.handle, a.path);
      if (isNull(handle)) {
        const log = this.recentErrors().slice(before);
        throw new PersonaError("E_BAD_MODEL", `llama.cpp could not load the LoRA adapter ${a.path}` + (log.length ? `: ${log.slice(-3).join(" | ")}` : ""));
      }
      this.loras.push({ handle, scale });
      applied.push({ path: a.path, scale });
    }
    this.info.adapters = applied;
  }

  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array {
    this.ensureAlive();
    const bytes = encoder.encode(text);
    let out = new Int32Array(bytes.length + 8);
    let n = this.api.llama_tokenize(this.vocab, bytes, bytes.length, out, out.length, addSpecial, parseSpecial);
    if (n < 0) {
      if (n === -2147483648) throw new PersonaError("E_BAD_INPUT", "text too long to tokenize");
      out = new Int32Array(-n);
      n = this.api.llama_tokenize(this.vocab, bytes, bytes.length, out, out.length, addSpecial, parseSpecial);
    }
    return out.slice(0, n);
  }

  detokenize(tokens: Int32Array, renderSpecial: boolean): string {
    this.ensureAlive();
    this.validateTokens(tokens);
    let buf = new Uint8Array(tokens.length * 8 + 16);
    let n = this.api.llama_detokenize(this.vocab, tokens, tokens.length, buf, buf.length, false, renderSpecial);
    if (n < 0) {
      buf = new Uint8Array(-n);
      n = this.api.llama_detokenize(this.vocab, tokens, tokens.length, buf, buf.length, false, renderSpecial);
    }
    return decoder.decode(buf.subarray(0, n));
  }

  tokenToPiece(token: number, renderSpecial: boolean): string {
    return decoder.decode(this.tokenBytes(token, renderSpecial));
  }

  /** Raw bytes of one token (a piece may be part of a multi-byte character). */
  tokenBytes(token: number, renderSpecial: boolean): Uint8Array {
    this.validateTokens([token]);
    let buf = new Uint8Array(64);
    let n = this.api.llama_token_to_piece(this.vocab, token, buf, buf.length, 0, renderSpecial);
    if (n < 0) {
      buf = new Uint8Array(-n);
      n = this.api.llama_token_to_piece(this.vocab, token, buf, buf.length, 0, renderSpecial);
    }
    return buf.slice(0, n);
  }

  /** llama.cpp's built-in (non-jinja) template engine, the fallback for templates jinja cannot run. */
  applyBuiltinTemplate(messages: readonly ChatMessage[], addAssistant: boolean, template?: string): string {
    this.ensureAlive();
    const tmpl = template ?? this.info.chatTemplate;
    if (!tmpl) throw new PersonaError("E_BAD_MODEL", `${this.info.name} has no chat template`);
    const chat = messages.map((m) => ({ role: m.role, content: m.content }));
    let len = chat.reduce((a, m) => a + m.content.length + m.role.length, 0) * 2 + 256;
    for (let attempt = 0; attempt < 2; attempt++) {
      const buf = new Uint8Array(len);
      const n = this.api.llama_chat_apply_template(tmpl, chat, chat.length, addAssistant, buf, buf.length);
      if (n < 0) throw new PersonaError("E_BAD_MODEL", `llama.cpp does not know this chat template`);
      if (n <= buf.length) return decoder.decode(buf.subarray(0, n));
      len = n;
    }
    throw new PersonaError("E_INTERNAL", "chat template output kept growing");
  }

  validateTokens(tokens: ArrayLike<number>): void {
    const nVocab = this.info.nVocab;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]!;
      if (!Number.isInteger(t) || t < 0 || t >= nVocab) {
        throw new PersonaError("E_BAD_INPUT", `token id ${t} at position ${i} is outside the vocabulary (0..${nVocab - 1})`);
      }
    }
  }

  lastErrors(): string {
    const log = this.recentErrors();
    return log.length ? `: ${log.slice(-2).join(" | ")}` : "";
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.api.llama_model_free(this.handle);
  }

  private ensureAlive(): void {
    if (this.freed) throw new PersonaError("E_DISPOSED", "model used after dispose()");
  }
}

