/**
 * GGUF model files, as `persona model info` (vocabulary-only load) and `persona generate` (full
 * load, tokenize, chat template, decode) read them. Cases start from a tiny synthetic llama
 * written by the project's own GGUF writer, get structured edits (metadata values and types,
 * tokenizer arrays, hyperparameters, tensor table) re-written through the writer, and sometimes
 * raw edits of header fields (counts, lengths, types, dims, offsets) located by walking the header.
 */
import { rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { type GgufKv, type GgufValue, readGguf, readTensorF32 } from "../../../src/engine/gguf/reader.js";
import { type SyntheticModelConfig, writeSyntheticModel } from "../../../src/engine/gguf/synthetic.js";
import { GgmlType, GgufValueType, GGUF_VALUE_SIZE } from "../../../src/engine/gguf/types.js";
import { GgufWriter } from "../../../src/engine/gguf/writer.js";
import { PersonaError } from "../../../src/errors.js";
import { applySome, interestingInt, mutateBytes, nastyString, readUint, writeUint } from "../mutate.js";
import type { FuzzCase, RunEnv, Target } from "../target.js";
import type { Engine } from "../../../src/engine/Engine.js";
import type { Model } from "../../../src/engine/Model.js";
import { bytesWrittenBy } from "../tmp.js";

export interface GgufSpec {
  kv: GgufKv[];
  tensors: { name: string; ne: number[]; data: Float32Array; f16: boolean }[];
  alignment: number;
}

const MODEL = "model.gguf";

/** The tiny model every GGUF case starts from: a 1-layer llama that writes, loads and decodes in a few ms. */
export const TINY_MODEL: SyntheticModelConfig = { arch: "llama", nLayer: 1, nEmbd: 16, nHead: 2, nHeadKv: 2, nFf: 32, contextLength: 64, seed: 7 };

export async function tinyModelSpec(cfg: SyntheticModelConfig = TINY_MODEL): Promise<GgufSpec> {
  const file = path.join(tmpdir(), `fuzz-seed-${process.pid}-${Date.now()}.gguf`);
  try {
    await writeSyntheticModel(file, cfg);
    const g = await readGguf(file);
    const tensors = [];
    for (const t of g.tensors) tensors.push({ name: t.name, ne: [...t.ne], data: await readTensorF32(g, t.name), f16: false });
    return { kv: [...g.kv.values()], tensors, alignment: g.alignment };
  } finally {
    await rm(file, { force: true });
  }
}

export function cloneSpec(s: GgufSpec): GgufSpec {
  return {
    kv: s.kv.map((e) => structuredClone(e)),
    tensors: s.tensors.map((t) => ({ ...t, ne: [...t.ne] })),
    alignment: s.alignment,
  };
}

/** Serialises a spec with the project's writer (which refuses malformed values, so edits stay encodable). */
export async function writeSpec(s: GgufSpec): Promise<Uint8Array> {
  const w = new GgufWriter({ alignment: s.alignment });
  for (const e of s.kv) w.set(e.key, e.type, e.value);
  for (const t of s.tensors) w.addTensor(t.name, t.ne, t.data, t.f16 ? GgmlType.F16 : GgmlType.F32);
  return bytesWrittenBy(".gguf", (file) => w.write(file));
}

// ---- structured edits ----

function kvOf(s: GgufSpec, key: string): GgufKv | undefined {
  return s.kv.find((e) => e.key === key);
}

export function setKv(s: GgufSpec, key: string, type: GgufValueType, value: GgufValue): void {
  const e = kvOf(s, key);
  if (e) Object.assign(e, { type, value });
  else s.kv.push({ key, type, value });
}

function removeKv(s: GgufSpec, key: string): void {
  s.kv = s.kv.filter((e) => e.key !== key);
}

function arr(itemType: GgufValueType, items: GgufValue[]): GgufValue {
  return { itemType, length: items.length, items };
}

function stringItems(s: GgufSpec, key: string): string[] {
  const v = kvOf(s, key)?.value;
  return v && typeof v === "object" && v.itemType === GgufValueType.STRING ? (v.items as string[]) : [];
}

function tokens(s: GgufSpec): string[] {
  return stringItems(s, "tokenizer.ggml.tokens");
}

function arch(s: GgufSpec): string {
  const v = kvOf(s, "general.architecture")?.value;
  return typeof v === "string" ? v : "llama";
}

/** A value of `type` from boundary values; arrays hold a few such items. */
function valueOf(rng: Rng, type: GgufValueType, depth = 0): GgufValue {
  const u = (size: 1 | 2 | 4 | 8) => interestingInt(rng, size, 1n);
  switch (type) {
    case GgufValueType.UINT8: return Number(u(1));
    case GgufValueType.INT8: return Number(BigInt.asIntN(8, u(1)));
    case GgufValueType.UINT16: return Number(u(2));
    case GgufValueType.INT16: return Number(BigInt.asIntN(16, u(2)));
    case GgufValueType.UINT32: return Number(u(4));
    case GgufValueType.INT32: return Number(BigInt.asIntN(32, u(4)));
    case GgufValueType.UINT64: return u(8);
    case GgufValueType.INT64: return BigInt.asIntN(64, u(8));
    case GgufValueType.FLOAT32:
    case GgufValueType.FLOAT64: return rng.pick([0, -1, 1, 1e-6, NaN, Infinity, -Infinity, 1e38, 3.4e38, -0, 2 ** 31, 0.5]);
    case GgufValueType.BOOL: return rng.chance(0.5);
    case GgufValueType.STRING: return nastyString(rng);
    default: {
      const itemType = depth > 0 ? GgufValueType.UINT32 : rng.pick([GgufValueType.UINT32, GgufValueType.INT32, GgufValueType.STRING, GgufValueType.FLOAT32, GgufValueType.ARRAY]);
      const n = rng.pick([0, 1, 2, 3, 513]);
      return arr(itemType, Array.from({ length: n }, () => valueOf(rng, itemType, depth + 1)));
    }
  }
}

const ALL_TYPES = Object.values(GgufValueType) as GgufValueType[];

const SPECIAL_KEYS = ["bos", "eos", "eot", "eom", "unknown", "seperator", "padding", "mask", "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep", "prefix", "suffix", "middle"].map(
  (k) => `tokenizer.ggml.${k}_token_id`,
);

const HPARAMS = [
  "context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count", "attention.head_count_kv",
  "rope.dimension_count", "rope.freq_base", "attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon", "expert_count",
  "expert_used_count", "expert_group_count", "expert_group_used_count", "nextn_predict_layers", "rope.scaling.type", "rope.scaling.factor",
  "attention.key_length", "attention.value_length", "vocab_size", "embedding_length_out", "pooling_type", "attention.causal",
  "attention.sliding_window", "leading_dense_block_count", "expert_feed_forward_length", "rope.scaling.original_context_length",
  "attention.key_length_swa", "rope.dimension_count_swa", "expert_shared_count", "attention.q_lora_rank", "attention.kv_lora_rank",
  "posnet.block_count", "convnext.block_count", "features_length", "ssm.conv_kernel", "ssm.state_size", "ssm.inner_size", "ssm.time_step_rank",
];

const ARCHES = [
  "llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gemma", "gemma2", "gemma3", "phi2", "phi3", "gpt2", "gptneox", "bert", "nomic-bert",
  "mamba", "mamba2", "rwkv6", "rwkv7", "t5", "t5encoder", "falcon", "starcoder2", "deepseek2", "granite", "olmo2", "command-r", "bloom",
  "mpt", "stablelm", "baichuan", "jamba", "wavtokenizer-dec", "clip", "unknown-arch", "",
];

const TOKENIZERS = ["gpt2", "llama", "bert", "t5", "rwkv", "plamo2", "gemma4", "no_vocab", "none", "hybriddna", "whitespace", "", "gpt2 "];
const PRES = ["gpt-2", "default", "llama3", "qwen2", "deepseek-llm", "falcon", "mpt", "starcoder", "refact", "command-r", "olmo", "dbrx", "smaug-bpe", "poro-chat", "chatglm-bpe", "viking", "jais", "tekken", "smollm", "codeshell", "bloom", "gpt3-finnish", "exaone", "chameleon", "minerva-7b", "megrez", "gpt-4o", "superbpe", "trillion", "bailingmoe", "llama4", "pixtral", "seed-coder", "kimi-k2", "gemma4", "no-such-pre", ""];

const TEMPLATES = [
  "{% for m in messages %}{{ m.content }}", "{{ messages[0]['content'] }}{% endfor %}", "{{ raise_exception('no') }}", "{{", "{% if %}",
  "{{ messages[99].content }}", "{% for m in messages %}{{ m.role | upper }}{{ m.content[::-1] }}{% endfor %}", "{{ 1/0 }}",
  "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "<|im_start|>", "", "{{ bos_token }}{{ eos_token }}", "{% set x = namespace(a=1) %}{{ x.a.b.c }}",
  "{{ messages | tojson }}", "{{ '%s' % 1 }}", "{% for i in range(100000000) %}{% endfor %}", "chatml", "llama3", "gemma", "zephyr", "{{ none.x }}",
];

function mutateTokens(rng: Rng, s: GgufSpec): string {
  const t = tokens(s);
  if (t.length === 0) {
    setKv(s, "tokenizer.ggml.tokens", GgufValueType.ARRAY, arr(GgufValueType.STRING, ["a", "a"]));
    return "tokens = [a, a]";
  }
  const i = rng.int(t.length);
  const j = rng.int(t.length);
  switch (rng.int(7)) {
    case 0:
      t[i] = t[j]!;
      return `token ${i} = token ${j} (${JSON.stringify(t[j])})`;
    case 1:
      t[i] = "";
      return `token ${i} empty`;
    case 2:
      t[i] = "";
      t[j] = `[EMPTY_${i}]`;
      return `token ${i} empty and token ${j} = [EMPTY_${i}]`;
    case 3:
      t[i] = rng.pick(["x", "Ġ", "<0x0A>"]).repeat(rng.pick([1000, 70000]));
      return `token ${i} huge`;
    case 4:
      t[i] = nastyString(rng);
      return `token ${i} = ${JSON.stringify(t[i]).slice(0, 40)}`;
    case 5: {
      const n = rng.pick([0, 1, 2, 10, 255, 256, t.length - 1]);
      t.length = Math.max(0, Math.min(n, t.length));
      return `tokens cut to ${t.length}`;
    }
    default: {
      const n = 1 + rng.int(50);
      for (let k = 0; k < n; k++) t.push(`new${k}_${rng.int(1e6)}`);
      return `${n} tokens appended`;
    }
  }
}

/**
 * A well-formed SentencePiece-style ("llama", "gemma4") vocabulary: the 256 <0xXX> byte tokens
 * appended (type BYTE), embeddings grown to match, so those tokenizers get cases that load.
 */
function toSentencePiece(rng: Rng, s: GgufSpec): string {
  const model = rng.pick(["llama", "gemma4"]);
  setKv(s, "tokenizer.ggml.model", GgufValueType.STRING, model);
  const t = tokens(s);
  const types = kvOf(s, "tokenizer.ggml.token_type")?.value;
  const have = new Set(t);
  for (let b = 0; b < 256; b++) {
    const hex = `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
    if (have.has(hex)) continue;
    t.push(hex);
    if (types && typeof types === "object") types.items.push(6);
  }
  if (types && typeof types === "object") types.length = types.items.length;
  const list = kvOf(s, "tokenizer.ggml.tokens")?.value;
  if (list && typeof list === "object") list.length = t.length;
  setKv(s, `${arch(s)}.vocab_size`, GgufValueType.UINT32, t.length);
  for (const name of ["token_embd.weight", "output.weight"]) {
    const i = s.tensors.findIndex((x) => x.name === name);
    if (i < 0) continue;
    const x = s.tensors[i]!;
    const data = new Float32Array(x.ne[0]! * t.length);
    data.set(x.data.subarray(0, Math.min(x.data.length, data.length)));
    s.tensors[i] = { ...x, ne: [x.ne[0]!, t.length], data };
  }
  return `${model} vocabulary with byte tokens`;
}

function mutateTokenTypes(rng: Rng, s: GgufSpec): string {
  const key = "tokenizer.ggml.token_type";
  const e = kvOf(s, key);
  switch (rng.int(5)) {
    case 0: {
      if (!e || typeof e.value !== "object") return "token_type absent";
      const items = e.value.items as number[];
      const n = 1 + rng.int(20);
      for (let k = 0; k < n && items.length; k++) items[rng.int(items.length)] = rng.pick([-1, 0, 1, 2, 3, 4, 5, 6, 7, 1000, 2 ** 31 - 1, -(2 ** 31)]);
      return `${n} token types changed`;
    }
    case 1: {
      if (!e || typeof e.value !== "object") return "token_type absent";
      e.value.items.length = rng.int(e.value.items.length);
      e.value.length = e.value.items.length;
      return `token types cut to ${e.value.items.length}`;
    }
    case 2: {
      const type = rng.pick([GgufValueType.UINT8, GgufValueType.FLOAT32, GgufValueType.UINT32, GgufValueType.STRING]);
      setKv(s, key, GgufValueType.ARRAY, arr(type, tokens(s).map(() => valueOf(rng, type, 1))));
      return `token types as type ${type}`;
    }
    case 3: {
      const all = rng.pick([6, 3, 4, 2, 5]);
      setKv(s, key, GgufValueType.ARRAY, arr(GgufValueType.INT32, tokens(s).map(() => all)));
      return `every token type = ${all}`;
    }
    default:
      removeKv(s, key);
      return "token types removed";
  }
}

function mutateMerges(rng: Rng, s: GgufSpec): string {
  const key = "tokenizer.ggml.merges";
  const m = stringItems(s, key);
  switch (rng.int(5)) {
    case 0: {
      const n = 1 + rng.int(10);
      for (let k = 0; k < n; k++) m.splice(rng.int(m.length + 1), 0, rng.pick(["", " ", "a", "a  b", "  ", "Ġ Ġ", "x y", "Ġt he", "<|im_start|> <|im_end|>", nastyString(rng), `${nastyString(rng)} ${nastyString(rng)}`]));
      return `${n} odd merges`;
    }
    case 1:
      removeKv(s, key);
      return "merges removed";
    case 2:
      setKv(s, key, GgufValueType.ARRAY, valueOf(rng, GgufValueType.ARRAY));
      return "merges retyped";
    case 3:
      m.reverse();
      return "merges reversed";
    default:
      m.length = 0;
      return "merges empty";
  }
}

function mutateSpecialIds(rng: Rng, s: GgufSpec): string {
  const key = rng.pick(SPECIAL_KEYS);
  const n = tokens(s).length;
  const type = rng.pick([GgufValueType.UINT32, GgufValueType.UINT32, GgufValueType.INT32, GgufValueType.UINT64, GgufValueType.INT64, GgufValueType.STRING, GgufValueType.FLOAT32]);
  if (type === GgufValueType.UINT32 && rng.chance(0.7)) {
    const v = rng.pick([n, n + 1, n - 1, 0, 0xffffffff, 0x80000000, 0x7fffffff, rng.int(n + 10)]);
    setKv(s, key, type, Math.max(0, v));
    return `${key} = ${v}`;
  }
  setKv(s, key, type, valueOf(rng, type));
  return `${key} retyped (${type})`;
}

function mutateHparam(rng: Rng, s: GgufSpec): string {
  const key = `${arch(s)}.${rng.pick(HPARAMS)}`;
  switch (rng.int(4)) {
    case 0:
      removeKv(s, key);
      return `${key} removed`;
    case 1: {
      const v = rng.pick([0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 32, 511, 512, 513, 1024, 1025, 65536, 2 ** 31, 2 ** 32 - 1]);
      setKv(s, key, GgufValueType.UINT32, v);
      return `${key} = ${v}`;
    }
    case 2: {
      // Per-layer arrays are legal for some keys (get_key_or_arr); lengths other than n_layer are not.
      const n = rng.pick([0, 1, 2, 512, 513]);
      setKv(s, key, GgufValueType.ARRAY, arr(GgufValueType.UINT32, Array.from({ length: n }, () => rng.pick([0, 1, 2, 16, 2 ** 32 - 1]))));
      return `${key} = u32[${n}]`;
    }
    default: {
      const type = rng.pick(ALL_TYPES);
      setKv(s, key, type, valueOf(rng, type));
      return `${key} retyped (${type})`;
    }
  }
}

function mutateArch(rng: Rng, s: GgufSpec): string {
  const from = arch(s);
  const to = rng.pick(ARCHES);
  setKv(s, "general.architecture", GgufValueType.STRING, to);
  if (rng.chance(0.7)) for (const e of s.kv) if (e.key.startsWith(`${from}.`)) e.key = `${to}.${e.key.slice(from.length + 1)}`;
  return `architecture ${to}`;
}

/** Removes `key`, or gives it a boundary value of a random type. */
export function mutateKv(rng: Rng, s: GgufSpec, key: string, how: "remove" | "retype"): string {
  if (how === "remove") {
    removeKv(s, key);
    return `${key} removed`;
  }
  const type = rng.pick(ALL_TYPES);
  setKv(s, key, type, valueOf(rng, type));
  return `${key} retyped (${type})`;
}

export function mutateTensors(rng: Rng, s: GgufSpec): string {
  if (s.tensors.length === 0) return "no tensors";
  const i = rng.int(s.tensors.length);
  const t = s.tensors[i]!;
  switch (rng.int(6)) {
    case 0:
      s.tensors.splice(i, 1);
      return `tensor ${t.name} dropped`;
    case 1: {
      const ne = [...t.ne];
      const d = rng.int(ne.length);
      ne[d] = rng.pick([0, 1, ne[d]! + 1, Math.max(0, ne[d]! - 1), ne[d]! * 2]);
      if (rng.chance(0.3) && ne.length < 4) ne.push(rng.pick([1, 2]));
      if (rng.chance(0.2)) ne.reverse();
      const count = ne.reduce((a, b) => a * b, 1);
      s.tensors[i] = { ...t, ne, data: new Float32Array(count).fill(0.01) };
      return `tensor ${t.name} shape [${ne.join(", ")}]`;
    }
    case 2:
      t.name = rng.pick(["blk.99.attn_q.weight", "blk.1.ffn_up.weight", "output.weight", "token_embd.weight", "x", t.name.replace("blk.0", "blk.1")]);
      if (s.tensors.filter((u) => u.name === t.name).length > 1) t.name += ".dup";
      return `tensor ${i} renamed ${t.name}`;
    case 3:
      t.f16 = true;
      return `tensor ${t.name} as F16`;
    case 4: {
      const name = rng.pick(["blk.0.attn_q.bias", "rope_freqs.weight", "blk.0.ffn_gate_inp.weight", "blk.0.attn_q_norm.weight", "extra.weight"]);
      if (!s.tensors.some((u) => u.name === name)) s.tensors.push({ name, ne: [16], data: new Float32Array(16), f16: false });
      return `tensor ${name} added`;
    }
    default:
      for (let k = 0; k < t.data.length; k++) t.data[k] = rng.pick([NaN, Infinity, -Infinity, 1e30, 0]);
      return `tensor ${t.name} filled with non-finite/huge values`;
  }
}

function structured(rng: Rng, s: GgufSpec): string {
  return applySome(rng, 3, [
    () => mutateTokens(rng, s),
    () => mutateTokens(rng, s),
    () => mutateTokenTypes(rng, s),
    () => mutateMerges(rng, s),
    () => mutateSpecialIds(rng, s),
    () => mutateSpecialIds(rng, s),
    () => mutateHparam(rng, s),
    () => mutateHparam(rng, s),
    () => mutateHparam(rng, s),
    () => mutateArch(rng, s),
    () => toSentencePiece(rng, s),
    () => toSentencePiece(rng, s),
    () => mutateTensors(rng, s),
    () => {
      const v = rng.pick(TOKENIZERS);
      setKv(s, "tokenizer.ggml.model", GgufValueType.STRING, v);
      return `tokenizer model "${v}"`;
    },
    () => {
      const v = rng.pick(PRES);
      setKv(s, "tokenizer.ggml.pre", GgufValueType.STRING, v);
      return `pre-tokenizer "${v}"`;
    },
    () => {
      const key = rng.pick(["add_bos_token", "add_eos_token", "add_sep_token", "add_space_prefix", "remove_extra_whitespaces"]);
      const type = rng.pick([GgufValueType.BOOL, GgufValueType.BOOL, GgufValueType.UINT8, GgufValueType.STRING]);
      setKv(s, `tokenizer.ggml.${key}`, type, valueOf(rng, type));
      return `${key} (${type})`;
    },
    () => {
      const n = tokens(s).length;
      const type = rng.pick([GgufValueType.FLOAT32, GgufValueType.INT32, GgufValueType.UINT8]);
      const len = rng.pick([n, n - 1, 0]);
      setKv(s, "tokenizer.ggml.scores", GgufValueType.ARRAY, arr(type, Array.from({ length: Math.max(0, len) }, () => valueOf(rng, type, 1))));
      return `scores ${type}[${len}]`;
    },
    () => {
      const v = rng.pick(TEMPLATES);
      if (rng.chance(0.2)) removeKv(s, "tokenizer.chat_template");
      else setKv(s, "tokenizer.chat_template", GgufValueType.STRING, v);
      return `chat template ${JSON.stringify(v).slice(0, 30)}`;
    },
    () => {
      const v = rng.pick([0, 1, 2, 3, 8, 64, 4096, 2 ** 31, 2 ** 32 - 1]);
      if (rng.chance(0.5) && v > 0 && (v & (v - 1)) === 0 && v <= 4096) s.alignment = v;
      else setKv(s, "general.alignment", rng.pick([GgufValueType.UINT32, GgufValueType.UINT64, GgufValueType.INT32]), v > 2 ** 31 - 1 ? 7 : v);
      return `alignment ${v}`;
    },
    () => {
      const v = rng.pick(["model", "adapter", "mmproj", "", "Model"]);
      setKv(s, "general.type", GgufValueType.STRING, v);
      return `general.type "${v}"`;
    },
    () => mutateKv(rng, s, rng.pick(s.kv).key, "remove"),
    () => mutateKv(rng, s, rng.pick(s.kv).key, "retype"),
  ]);
}

// ---- raw header fields ----

interface Field {
  at: number;
  size: 1 | 2 | 4 | 8;
  what: string;
}

/** Every count, length, type id, dimension and offset in a GGUF header, by byte position. */
export function headerFields(b: Uint8Array): { fields: Field[]; headerEnd: number } {
  const fields: Field[] = [];
  let p = 4;
  const take = (size: 1 | 2 | 4 | 8, what: string, record = true): bigint => {
    if (p + size > b.length) throw new RangeError("end");
    if (record) fields.push({ at: p, size, what });
    const v = readUint(b, p, size);
    p += size;
    return v;
  };
  const str = (what: string): void => {
    const n = take(8, `${what} length`);
    if (n > BigInt(b.length - p)) throw new RangeError("end");
    p += Number(n);
  };
  const value = (type: number, what: string, depth: number): void => {
    if (type === GgufValueType.STRING) return str(what);
    if (type === GgufValueType.ARRAY) {
      const itemType = Number(take(4, `${what} item type`));
      const n = Number(take(8, `${what} array length`));
      if (depth > 2 || n > b.length) throw new RangeError("end");
      for (let i = 0; i < n; i++) {
        // Every item of short arrays, a sample of long ones (the token arrays have hundreds).
        const keep = n < 16 || i % 37 === 0;
        if (itemType === GgufValueType.STRING) {
          const len = take(8, `${what}[${i}] length`, keep);
          p += Number(len);
        } else if (itemType === GgufValueType.ARRAY) value(itemType, `${what}[${i}]`, depth + 1);
        else {
          const size = GGUF_VALUE_SIZE[itemType] as 1 | 2 | 4 | 8 | undefined;
          if (!size) throw new RangeError("bad type");
          take(size, `${what}[${i}]`, keep);
        }
      }
      return;
    }
    const size = GGUF_VALUE_SIZE[type] as 1 | 2 | 4 | 8 | undefined;
    if (!size) throw new RangeError("bad type");
    take(size, what);
  };
  try {
    take(4, "version");
    const nTensors = Number(take(8, "tensor count"));
    const nKv = Number(take(8, "metadata count"));
    for (let i = 0; i < nKv; i++) {
      str(`key ${i}`);
      const type = Number(take(4, `kv ${i} type`));
      value(type, `kv ${i}`, 0);
    }
    for (let i = 0; i < nTensors; i++) {
      str(`tensor ${i} name`);
      const nDims = Number(take(4, `tensor ${i} n_dims`));
      for (let d = 0; d < Math.min(nDims, 4); d++) take(8, `tensor ${i} ne[${d}]`);
      take(4, `tensor ${i} type`);
      take(8, `tensor ${i} offset`);
    }
  } catch {
    // a header the structured edits already broke: whatever was found is enough
  }
  return { fields, headerEnd: p };
}

function raw(rng: Rng, bytes: Uint8Array): { bytes: Uint8Array; what: string } {
  const { fields, headerEnd } = headerFields(bytes);
  if (fields.length > 0 && rng.chance(0.75)) {
    const out = Uint8Array.from(bytes);
    const f = rng.pick(fields);
    let v = interestingInt(rng, f.size, readUint(out, f.at, f.size));
    // Type ids: mostly the other valid types.
    if (/type$/.test(f.what) && rng.chance(0.6)) v = BigInt(rng.int(f.what.startsWith("tensor") ? 43 : 14));
    writeUint(out, f.at, f.size, v);
    return { bytes: out, what: `${f.what} = ${v}` };
  }
  return mutateBytes(rng, bytes, rng.chance(0.8) ? [0, headerEnd] : undefined);
}

// ---- the target ----

const TEXTS = ["Hello, world!", "<|im_start|>user\nhi<|im_end|>", "\n\n", " ", "ÿ€😀", "<|endoftext|><|endoftext|>", "a".repeat(300), "<0x0A>", "[EMPTY_0]"];

export async function makeGgufCase(rng: Rng, base: GgufSpec, edit: (rng: Rng, s: GgufSpec) => string): Promise<{ bytes: Uint8Array; note: string; text: string }> {
  const s = cloneSpec(base);
  const notes = [edit(rng, s)];
  let bytes: Uint8Array;
  try {
    bytes = await writeSpec(s);
  } catch (e) {
    // The writer refuses what it cannot encode; that edit is then left out.
    if (!(e instanceof PersonaError)) throw e;
    notes.push(`(writer refused: ${e.message}; base model used)`);
    bytes = await writeSpec(base);
  }
  if (rng.chance(0.35)) {
    for (let i = 0, n = 1 + rng.int(2); i < n; i++) {
      const r = raw(rng, bytes);
      bytes = r.bytes;
      notes.push(r.what);
    }
  }
  // At most 4096 characters: decoding a 70,000-token prompt is slow (the campaign's only "hangs"), not a bug.
  const text = (rng.chance(0.5) ? rng.pick(TEXTS) : nastyString(rng)).slice(0, 4096);
  return { bytes, note: notes.join("; "), text };
}

/** What `persona model info` and `persona generate` do with a model file, on the child's shared engine. */
export async function runModelCommands(env: RunEnv, text: string): Promise<void> {
  const engine = await env.engine();
  const info = await engine.loadModel(MODEL, { vocabOnly: true });
  await info.dispose();
  const m = await engine.loadModel(MODEL);
  try {
    const raw = await m.tokenize(text, { parseSpecial: true });
    await m.detokenize(raw, { renderSpecial: true });
    let prompt: Int32Array;
    try {
      prompt = await m.encodeChat([{ role: "user", content: text }]);
    } catch (e) {
      if (!(e instanceof PersonaError)) throw e;
      prompt = raw; // no usable template: `persona generate --raw`
    }
    await m.generate([{ prompt }], { maxTokens: 3, temperature: 0 });
  } finally {
    await m.dispose();
  }
}

export function modelCommands(text: string, raw = false): string[][] {
  return [
    ["model", "info", "--model", MODEL, "--json"],
    ["generate", "--model", MODEL, "-p", text, "--max-tokens", "3", "-t", "0", ...(raw ? ["--raw"] : [])],
  ];
}

export const ggufTarget: Target<GgufSpec> = {
  name: "gguf",
  description: "GGUF model files: header, metadata of every type, tokenizer arrays, hyperparameters, tensor table (model info + generate)",
  setup: tinyModelSpec,
  async make(rng, base): Promise<FuzzCase> {
    const c = await makeGgufCase(rng, base, structured);
    return { files: { [MODEL]: c.bytes }, commands: modelCommands(c.text), note: c.note, input: c.text };
  },
  run: (c, env) => runModelCommands(env, c.input as string),
};

let loaded: { engine: Engine; model: Promise<Model> } | undefined;

/**
 * The tiny model loaded once per engine, for targets that fuzz what goes into a model rather than
 * the model file (loading it per case would cost more than the case). Callers must not dispose it.
 */
export async function sharedTinyModel(env: RunEnv): Promise<Model> {
  const engine = await env.engine();
  if (loaded?.engine !== engine) {
    const file = path.join(tmpdir(), `fuzz-tiny-${process.pid}.gguf`);
    await writeFile(file, await writeSpec(await tinyModelSpec()));
    loaded = { engine, model: engine.loadModel(file) };
  }
  return loaded.model;
}
