/**
 * Tiny random checkpoints in the Hugging Face layout, as a user's `save_pretrained` would leave
 * them: config.json, sharded safetensors with their index, a byte-level BPE tokenizer.json (merges
 * trained here on a small multilingual text) with added/special tokens, tokenizer_config.json
 * with a chat template; and PEFT LoRA adapters for them.
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { bytesToUnicode } from "../../src/engine/gguf/byte-unicode.js";
import { encodeSafetensors, type FloatTensor } from "../../src/vectors/safetensors.js";

export type TinyArch = "llama" | "qwen2" | "qwen3";

export const REGEX = {
  llama: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  qwen: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

export const CORPUS = [
  "The quick brown fox jumps over the lazy dog. I'm sure they'll say it's fine, isn't it?",
  "Der schnelle braune Fuchs springt über den faulen Hund. Grüße aus München!",
  "Быстрая коричневая лиса прыгает через ленивую собаку.",
  "敏捷的棕色狐狸跳过了懒狗。我们今天去公园散步吧。",
  "素早い茶色の狐がのろまな犬を飛び越える。こんにちは、世界！",
  "الثعلب البني السريع يقفز فوق الكلب الكسول",
  "function add(a, b) { return a + b; } // 12345 + 67890 = 80235",
  "Emoji test: 😀🎉👍🏽 and café, naïve, résumé.\n\n\tTabs   and    spaces\r\n",
];

function rand(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

/** Trains `nMerges` byte-level BPE merges on the corpus, pre-split by `regex`. */
export function trainBpe(regex: string, nMerges: number): { vocab: Record<string, number>; merges: string[] } {
  const re = new RegExp(regex.replace("(?i:", "(?:"), "gu");
  const enc = new TextEncoder();
  const words = new Map<string, number>();
  for (const line of CORPUS) for (const m of line.matchAll(re)) words.set(m[0], (words.get(m[0]) ?? 0) + 1);
  let seqs = [...words].map(([w, c]) => ({ parts: [...bytesToUnicode(enc.encode(w))], c }));
  const vocab: Record<string, number> = {};
  const bytes = Array.from({ length: 256 }, (_, i) => bytesToUnicode(Uint8Array.of(i)));
  bytes.forEach((b, i) => (vocab[b] = i));
  const merges: string[] = [];
  for (let k = 0; k < nMerges; k++) {
    const counts = new Map<string, number>();
    for (const s of seqs) for (let i = 0; i + 1 < s.parts.length; i++) counts.set(`${s.parts[i]} ${s.parts[i + 1]}`, (counts.get(`${s.parts[i]} ${s.parts[i + 1]}`) ?? 0) + s.c);
    let best: string | undefined;
    let bestC = 1;
    for (const [p, c] of counts) if (c > bestC || (c === bestC && best !== undefined && p < best)) [best, bestC] = [p, c];
    if (best === undefined) break;
    const [l, r] = best.split(" ") as [string, string];
    merges.push(best);
    if (vocab[l + r] === undefined) vocab[l + r] = Object.keys(vocab).length;
    seqs = seqs.map((s) => {
      const out: string[] = [];
      for (let i = 0; i < s.parts.length; i++) {
        if (i + 1 < s.parts.length && s.parts[i] === l && s.parts[i + 1] === r) {
          out.push(l + r);
          i++;
        } else out.push(s.parts[i]!);
      }
      return { parts: out, c: s.c };
    });
  }
  return { vocab, merges };
}

export interface TinyCheckpoint {
  dir: string;
  config: Record<string, unknown>;
  /** HF weights by name, row-major [out, in]. */
  weights: Map<string, FloatTensor>;
  specials: string[];
}

const SPECIALS = {
  llama: { bos: "<|begin_of_text|>", eos: "<|eot_id|>", extra: ["<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"] },
  qwen: { bos: undefined, eos: "<|im_end|>", extra: ["<|endoftext|>", "<|im_start|>"] },
};

const LLAMA3_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";
const CHATML_TEMPLATE =
  "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/** Writes a random checkpoint; `dtype` BF16 stores every matrix as bfloat16 (values rounded so both sides agree). */
export async function writeTinyCheckpoint(
  dir: string,
  arch: TinyArch,
  opts: { nLayer?: number; nEmbd?: number; nHead?: number; nHeadKv?: number; nFf?: number; headDim?: number; seed?: number; tied?: boolean; ropeScaling?: boolean } = {},
): Promise<TinyCheckpoint> {
  await mkdir(dir, { recursive: true });
  const { nLayer = 2, nEmbd = 64, nHead = 4, nHeadKv = 2, nFf = 96, seed = 1, tied = arch !== "llama" } = opts;
  const headDim = opts.headDim ?? nEmbd / nHead;
  const family = arch === "llama" ? "llama" : "qwen";
  const { vocab, merges } = trainBpe(family === "llama" ? REGEX.llama : REGEX.qwen, 300);
  const sp = SPECIALS[family];
  const specials = [sp.bos, sp.eos, ...sp.extra].filter((t): t is string => t !== undefined);
  const nBase = Object.keys(vocab).length;
  const added = specials.map((content, i) => ({ id: nBase + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  // One non-special added token, as fine-tuners add.
  added.push({ id: nBase + specials.length, content: "<tool>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: false });
  const nVocab = nBase + added.length + 5; // a few embedding rows with no token, as Qwen pads
  const id = (t: string) => added.find((a) => a.content === t)!.id;

  const tokenizer = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: family === "qwen" ? { type: "NFC" } : null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: family === "llama" ? REGEX.llama : REGEX.qwen }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor:
      family === "llama"
        ? {
            type: "TemplateProcessing",
            single: [{ SpecialToken: { id: sp.bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
            pair: [{ SpecialToken: { id: sp.bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
            special_tokens: { [sp.bos!]: { id: sp.bos, ids: [id(sp.bos!)], tokens: [sp.bos] } },
          }
        : { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: family === "llama",
      vocab,
      merges: family === "llama" ? merges.map((m) => m.split(" ")) : merges,
    },
  };
  await writeFile(path.join(dir, "tokenizer.json"), JSON.stringify(tokenizer));
  // Newer transformers keep the template in its own file.
  if (arch === "qwen3") await writeFile(path.join(dir, "chat_template.jinja"), CHATML_TEMPLATE);
  await writeFile(
    path.join(dir, "tokenizer_config.json"),
    JSON.stringify({
      bos_token: sp.bos ?? null,
      eos_token: sp.eos,
      pad_token: family === "qwen" ? "<|endoftext|>" : null,
      ...(arch === "qwen3" ? {} : { chat_template: family === "llama" ? LLAMA3_TEMPLATE : CHATML_TEMPLATE }),
      ...(family === "qwen" ? { add_bos_token: false } : {}),
    }),
  );

  const config: Record<string, unknown> = {
    architectures: [{ llama: "LlamaForCausalLM", qwen2: "Qwen2ForCausalLM", qwen3: "Qwen3ForCausalLM" }[arch]],
    model_type: arch,
    hidden_size: nEmbd,
    intermediate_size: nFf,
    num_attention_heads: nHead,
    num_key_value_heads: nHeadKv,
    num_hidden_layers: nLayer,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-6,
    rope_theta: arch === "llama" ? 500000 : 1000000,
    vocab_size: nVocab,
    tie_word_embeddings: tied,
    bos_token_id: sp.bos ? id(sp.bos) : id("<|endoftext|>"),
    eos_token_id: id(sp.eos),
    torch_dtype: "float32",
    ...(arch === "qwen3" ? { head_dim: headDim } : {}),
    ...(opts.ropeScaling ? { rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } } : {}),
  };
  await writeFile(path.join(dir, "config.json"), JSON.stringify(config, null, 2));

  const r = rand(seed);
  const w = new Map<string, FloatTensor>();
  const t = (name: string, shape: number[], std: number, mean = 0) => w.set(name, { shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => mean + std * r() * 3.4) });
  t("model.embed_tokens.weight", [nVocab, nEmbd], 0.5);
  for (let l = 0; l < nLayer; l++) {
    const p = `model.layers.${l}`;
    t(`${p}.input_layernorm.weight`, [nEmbd], 0.1, 1);
    t(`${p}.post_attention_layernorm.weight`, [nEmbd], 0.1, 1);
    t(`${p}.self_attn.q_proj.weight`, [nHead * headDim, nEmbd], 0.3);
    t(`${p}.self_attn.k_proj.weight`, [nHeadKv * headDim, nEmbd], 0.3);
    t(`${p}.self_attn.v_proj.weight`, [nHeadKv * headDim, nEmbd], 0.2);
    t(`${p}.self_attn.o_proj.weight`, [nEmbd, nHead * headDim], 0.2);
    if (arch === "qwen2") {
      t(`${p}.self_attn.q_proj.bias`, [nHead * headDim], 0.1);
      t(`${p}.self_attn.k_proj.bias`, [nHeadKv * headDim], 0.1);
      t(`${p}.self_attn.v_proj.bias`, [nHeadKv * headDim], 0.1);
    }
    if (arch === "qwen3") {
      t(`${p}.self_attn.q_norm.weight`, [headDim], 0.1, 1);
      t(`${p}.self_attn.k_norm.weight`, [headDim], 0.1, 1);
    }
    t(`${p}.mlp.gate_proj.weight`, [nFf, nEmbd], 0.2);
    t(`${p}.mlp.up_proj.weight`, [nFf, nEmbd], 0.2);
    t(`${p}.mlp.down_proj.weight`, [nEmbd, nFf], 0.2);
  }
  t("model.norm.weight", [nEmbd], 0.1, 1);
  if (!tied) t("lm_head.weight", [nVocab, nEmbd], 0.2);

  // Two shards and their index, as save_pretrained writes past its shard size.
  const names = [...w.keys()];
  const half = Math.ceil(names.length / 2);
  const shards = [names.slice(0, half), names.slice(half)];
  const weightMap: Record<string, string> = {};
  for (const [i, shard] of shards.entries()) {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    await writeFile(path.join(dir, file), encodeSafetensors(new Map(shard.map((n) => [n, w.get(n)!])), { format: "pt" }));
    for (const n of shard) weightMap[n] = file;
  }
  await writeFile(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  return { dir, config, weights: w, specials };
}

/** A PEFT LoRA adapter over `modules` (HF module names) with per-module ranks; returns A, B by module. */
export async function writePeftAdapter(
  dir: string,
  base: TinyCheckpoint | { nIn: (m: string) => number; nOut: (m: string) => number },
  modules: Record<string, number>,
  cfg: { alpha: number; rslora?: boolean; alphaPattern?: Record<string, number>; seed?: number },
): Promise<Map<string, { a: FloatTensor; b: FloatTensor }>> {
  await mkdir(dir, { recursive: true });
  const r = rand(cfg.seed ?? 5);
  const out = new Map<string, { a: FloatTensor; b: FloatTensor }>();
  const tensors = new Map<string, FloatTensor>();
  for (const [module, rank] of Object.entries(modules)) {
    const [nOut, nIn] = "weights" in base ? base.weights.get(`${module}.weight`)!.shape : [base.nOut(module), base.nIn(module)];
    const a = { shape: [rank, nIn!], data: Float32Array.from({ length: rank * nIn! }, () => r() * 0.8) };
    const b = { shape: [nOut!, rank], data: Float32Array.from({ length: nOut! * rank }, () => r() * 0.8) };
    out.set(module, { a, b });
    tensors.set(`base_model.model.${module}.lora_A.weight`, a);
    tensors.set(`base_model.model.${module}.lora_B.weight`, b);
  }
  const rankPattern = Object.fromEntries(Object.entries(modules).map(([m, rank]) => [m.replace(/^model\./, ""), rank]));
  await writeFile(path.join(dir, "adapter_model.safetensors"), encodeSafetensors(tensors, { format: "pt" }));
  await writeFile(
    path.join(dir, "adapter_config.json"),
    JSON.stringify({
      peft_type: "LORA",
      r: 8,
      lora_alpha: cfg.alpha,
      use_rslora: cfg.rslora ?? false,
      rank_pattern: rankPattern,
      alpha_pattern: cfg.alphaPattern ?? {},
      target_modules: ["q_proj", "v_proj", "down_proj"],
      fan_in_fan_out: false,
      base_model_name_or_path: "tiny",
    }),
  );
  return out;
}
