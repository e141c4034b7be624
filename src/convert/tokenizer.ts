/**
 * A Hugging Face `tokenizer.json` (byte-level BPE, as Llama 3 and Qwen use) and its
 * `tokenizer_config.json` → llama.cpp's "gpt2" tokenizer metadata: tokens in id order (holes
 * padded as UNUSED `[PADn]`, as llama.cpp's converter does), merges, added tokens (special →
 * CONTROL, others USER_DEFINED), the pre-tokenizer named by its regex, BOS/EOS/pad, add_bos and
 * the chat template. Anything llama.cpp would tokenize differently is refused, not approximated.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { PersonaError } from "../errors.js";
import { type ByteBpeTokenizerSpec, TokenType } from "../engine/gguf/tokenizer-meta.js";

/** Pre-tokenizer regexes (as tokenizer.json spells them) → llama.cpp's `tokenizer.ggml.pre`. */
const PRE_TOKENIZERS: Readonly<Record<string, string>> = {
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "llama-bpe",
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",
};

const AddedToken = z.object({ id: z.number().int().nonnegative(), content: z.string().min(1), special: z.boolean().default(false) });
const TokenizerJson = z.object({
  added_tokens: z.array(AddedToken).default([]),
  normalizer: z.unknown().nullable().optional(),
  pre_tokenizer: z.unknown(),
  post_processor: z.unknown().nullable().optional(),
  model: z.object({
    type: z.literal("BPE"),
    vocab: z.record(z.string(), z.number().int().nonnegative()),
    merges: z.array(z.union([z.string(), z.tuple([z.string(), z.string()])])),
    byte_fallback: z.boolean().nullable().optional(),
    ignore_merges: z.boolean().nullable().optional(),
  }),
});

const TokenRef = z.union([z.string(), z.object({ content: z.string() })]).nullable().optional();
const TokenizerConfig = z.object({
  bos_token: TokenRef,
  eos_token: TokenRef,
  pad_token: TokenRef,
  add_bos_token: z.boolean().nullable().optional(),
  add_eos_token: z.boolean().nullable().optional(),
  chat_template: z.union([z.string(), z.array(z.object({ name: z.string(), template: z.string() }))]).nullable().optional(),
});

export interface HfTokenizerIds {
  /** `config.json`'s bos/eos ids, used when tokenizer_config.json names none. */
  bosTokenId?: number;
  eosTokenId?: number;
  /** Rows of the embedding matrix: the vocabulary is padded up to it. */
  vocabSize: number;
}

async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as unknown;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new PersonaError("E_NOT_FOUND", `${file} is missing`);
    throw new PersonaError("E_BAD_FORMAT", `${file} is not valid JSON: ${(e as Error).message}`);
  }
}

function parse<T>(schema: z.ZodType<T>, data: unknown, file: string): T {
  const r = schema.safeParse(data);
  if (!r.success) throw new PersonaError("E_BAD_FORMAT", `${file}: ${r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ")}`);
  return r.data;
}

/** The Split regex of a byte-level pre-tokenizer (`Sequence[Split, ByteLevel(use_regex=false)]`). */
function preTokenizerName(pre: unknown, file: string): string {
  const seq = (pre as { type?: string; pretokenizers?: unknown } | null)?.type === "Sequence" ? (pre as { pretokenizers?: unknown }).pretokenizers : [pre];
  if (!Array.isArray(seq)) throw new PersonaError("E_BAD_FORMAT", `${file}: pre_tokenizer.pretokenizers is not a list`);
  // Steps that are not objects (null, numbers) match neither kind.
  const steps = seq.map((s: unknown) => (typeof s === "object" && s !== null ? (s as { type?: unknown }) : {}));
  const split = steps.find((s) => s.type === "Split") as { pattern?: { Regex?: string } } | undefined;
  const byteLevel = steps.find((s) => s.type === "ByteLevel") as { use_regex?: boolean; add_prefix_space?: boolean } | undefined;
  if (!byteLevel) throw new PersonaError("E_BAD_MODEL", `${file}: the pre-tokenizer is not byte-level; only byte-level BPE tokenizers (Llama 3, Qwen) convert`);
  if (byteLevel.add_prefix_space) throw new PersonaError("E_BAD_MODEL", `${file}: a byte-level pre-tokenizer that adds a prefix space is not supported`);
  const regex = split?.pattern?.Regex;
  if (regex === undefined && byteLevel.use_regex !== false) return "gpt-2";
  const name = regex !== undefined ? PRE_TOKENIZERS[regex] : undefined;
  if (name === undefined) {
    throw new PersonaError("E_BAD_MODEL", `${file}: unknown pre-tokenizer regex ${JSON.stringify(regex)}; llama.cpp would split text differently (known: Llama 3, Qwen2/Qwen3)`);
  }
  return name;
}

/** Whether the post-processor puts `bos` in front of a single sequence (Llama 3's TemplateProcessing). */
function postProcessorAddsBos(post: unknown, bos: string | undefined): boolean {
  if (bos === undefined || !post || typeof post !== "object") return false;
  const seq = (post as { type?: string; processors?: unknown }).type === "Sequence" ? (post as { processors?: unknown }).processors : [post];
  const steps = Array.isArray(seq) ? seq.filter((p: unknown) => typeof p === "object" && p !== null) : [];
  return steps.some((p) => {
    const single = (p as { type?: string; single?: { SpecialToken?: { id?: string } }[] }).type === "TemplateProcessing" ? (p as { single: { SpecialToken?: { id?: string } }[] }).single : undefined;
    return single?.[0]?.SpecialToken?.id === bos;
  });
}

export async function readHfTokenizer(dir: string, ids: HfTokenizerIds): Promise<ByteBpeTokenizerSpec> {
  const tokFile = path.join(dir, "tokenizer.json");
  const cfgFile = path.join(dir, "tokenizer_config.json");
  const tok = parse(TokenizerJson, await readJson(tokFile), tokFile);
  const cfg = parse(TokenizerConfig, await readJson(cfgFile).catch((e: unknown) => (e instanceof PersonaError && e.code === "E_NOT_FOUND" ? {} : Promise.reject(e))), cfgFile);
  // Qwen's NFC normalizer is accepted as llama.cpp's own converter accepts it: llama.cpp does not
  // normalize, so only text that is not already NFC (rare) can tokenize differently.
  const normalizer = (tok.normalizer as { type?: string } | null | undefined)?.type;
  if (normalizer !== undefined && normalizer !== "NFC") {
    throw new PersonaError("E_BAD_MODEL", `${tokFile}: the ${normalizer} normalizer is not supported (llama.cpp applies none; Llama 3 has none, Qwen NFC)`);
  }
  if (tok.model.byte_fallback) throw new PersonaError("E_BAD_MODEL", `${tokFile}: byte-fallback BPE (SentencePiece style) is not supported`);
  const pre = preTokenizerName(tok.pre_tokenizer, tokFile);

  const byId = new Map<number, string>();
  for (const [text, id] of Object.entries(tok.model.vocab)) byId.set(id, text);
  const types = new Map<number, number>();
  for (const a of tok.added_tokens) {
    const prev = byId.get(a.id);
    if (prev !== undefined && prev !== a.content) throw new PersonaError("E_BAD_MODEL", `${tokFile}: id ${a.id} is both ${JSON.stringify(prev)} and added token ${JSON.stringify(a.content)}`);
    byId.set(a.id, a.content);
    types.set(a.id, a.special ? TokenType.CONTROL : TokenType.USER_DEFINED);
  }
  // Checked before the id-ordered table is built: a stray id of 1e9 would otherwise fill memory.
  for (const [id, text] of byId) {
    if (id >= ids.vocabSize) throw new PersonaError("E_BAD_MODEL", `${tokFile}: token ${JSON.stringify(text)} has id ${id}, past config.json vocab_size ${ids.vocabSize} (the embedding rows)`);
  }
  const n = ids.vocabSize;
  const tokens: string[] = [];
  const tokenTypes: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = byId.get(i);
    tokens.push(t ?? `[PAD${i}]`);
    tokenTypes.push(t === undefined ? TokenType.UNUSED : (types.get(i) ?? TokenType.NORMAL));
  }
  const idOf = (ref: z.infer<typeof TokenRef>, what: string): number | undefined => {
    if (ref === null || ref === undefined) return undefined;
    const text = typeof ref === "string" ? ref : ref.content;
    const id = tokens.indexOf(text);
    if (id < 0) throw new PersonaError("E_BAD_MODEL", `${cfgFile}: ${what} ${JSON.stringify(text)} is not in the vocabulary`);
    return id;
  };
  const bos = idOf(cfg.bos_token, "bos_token") ?? ids.bosTokenId;
  const eos = idOf(cfg.eos_token, "eos_token") ?? ids.eosTokenId;
  if (eos === undefined) throw new PersonaError("E_BAD_MODEL", `${dir}: no eos token in tokenizer_config.json or config.json`);
  const pad = idOf(cfg.pad_token, "pad_token");
  const bosText = bos !== undefined ? tokens[bos] : undefined;
  // Newer transformers save the template beside tokenizer_config.json as chat_template.jinja.
  const chatTemplate =
    (Array.isArray(cfg.chat_template) ? cfg.chat_template.find((t) => t.name === "default")?.template : (cfg.chat_template ?? undefined)) ??
    (await readFile(path.join(dir, "chat_template.jinja"), "utf8").catch(() => undefined));
  return {
    tokens,
    tokenTypes,
    merges: tok.model.merges.map((m) => (typeof m === "string" ? m : `${m[0]} ${m[1]}`)),
    bos: bos ?? eos,
    eos,
    eot: eos,
    ...(pad !== undefined ? { pad } : {}),
    pre,
    ...(chatTemplate !== undefined ? { chatTemplate } : {}),
    addBos: cfg.add_bos_token ?? postProcessorAddsBos(tok.post_processor, bosText),
  };
}
