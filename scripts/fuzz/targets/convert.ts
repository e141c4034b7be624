/**
 * Hugging Face checkpoints and PEFT adapters, as `persona convert hf DIR` and `persona convert lora
 * DIR --base` read them: tiny checkpoints written by the tests' helper (llama, qwen2, qwen3), then
 * edited (config fields, tokenizer vocab/merges/added tokens, tokenizer_config and chat templates,
 * safetensors headers and data, the shard index, missing files; adapter_config fields and the
 * adapter's tensors). A GGUF a mutant converts to is then loaded and run by the engine: a
 * converter that writes a file llama.cpp aborts on crashes the process too.
 */
import { existsSync } from "node:fs";
import { readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { convertHf } from "../../../src/convert/hf.js";
import { type TinyArch, writePeftAdapter, writeTinyCheckpoint } from "../../../test/helpers/hf-checkpoint.js";
import { applySome, interestingNumber, jsonValue, mutateBytes, mutateJson, nastyString } from "../mutate.js";
import { type FuzzCase, type RunEnv, type Target, runCommands } from "../target.js";
import { bytesWrittenBy } from "../tmp.js";
import { mutateVectorsFile } from "./vectors.js";

type Files = Record<string, Uint8Array | string>;

interface ConvertSeed {
  hf: Record<TinyArch, Files>;
  /** A GGUF converted from the llama checkpoint, and a PEFT adapter for it. */
  base: Uint8Array;
  adapter: Files;
}

const ARCHS: TinyArch[] = ["llama", "qwen2", "qwen3"];
const LORA_MODULES = { "model.layers.0.self_attn.q_proj": 4, "model.layers.1.self_attn.k_proj": 2, "model.layers.0.mlp.down_proj": 3 };

async function filesOf(dir: string): Promise<Files> {
  const out: Files = {};
  for (const name of await readdir(dir)) out[name] = await readFile(path.join(dir, name));
  return out;
}

/** `v` if it is a JSON object, else a fresh one (earlier edits retype fields). */
const obj = (v: unknown): Record<string, unknown> => (typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {});

const text = (b: Uint8Array | string) => (typeof b === "string" ? b : Buffer.from(b).toString("utf8"));

/** Parses a JSON file of the case, applies `edit`, writes it back (unparsable files get byte damage instead). */
function editJson(rng: Rng, files: Files, name: string, edit: (doc: Record<string, unknown>) => string): string {
  const raw = files[name];
  if (raw === undefined) return `${name} missing`;
  let doc: unknown;
  try {
    doc = JSON.parse(text(raw));
  } catch {
    const r = mutateBytes(rng, typeof raw === "string" ? Buffer.from(raw) : raw);
    files[name] = r.bytes;
    return `${name}: ${r.what}`;
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) doc = {};
  const what = edit(doc as Record<string, unknown>);
  files[name] = JSON.stringify(doc) ?? "null";
  return `${name}: ${what}`;
}

function generic(rng: Rng, files: Files, name: string): string {
  return editJson(rng, files, name, (doc) => {
    const r = mutateJson(rng, doc);
    // A replaced root is written as given.
    if (r.doc !== doc) {
      for (const k of Object.keys(doc)) delete doc[k];
      Object.assign(doc, { __root: r.doc });
    }
    return r.what;
  });
}

const CONFIG_FIELDS = [
  "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers", "vocab_size", "head_dim",
  "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings", "bos_token_id", "eos_token_id", "torch_dtype",
  "architectures", "model_type", "rope_scaling",
];

function configField(rng: Rng, doc: Record<string, unknown>): string {
  const key = rng.pick(CONFIG_FIELDS);
  const v = rng.chance(0.1)
    ? undefined
    : key === "architectures"
      ? rng.pick([[], ["GPT2LMHeadModel"], "LlamaForCausalLM", ["LlamaForCausalLM", "Qwen2ForCausalLM"], [nastyString(rng)]])
      : key === "rope_scaling"
        ? rng.pick([null, { rope_type: "llama3", factor: interestingNumber(rng), low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 }, { rope_type: "yarn", factor: 4 }, { type: "linear", factor: 0 }, { rope_type: "llama3", factor: 8, low_freq_factor: 4, high_freq_factor: 4, original_max_position_embeddings: 0 }])
        : rng.chance(0.7)
          ? rng.pick([0, 1, 2, 3, 5, 7, 8, 16, 32, 63, 64, 65, 128, 4096, -1, 2 ** 31, 1e300, 0.5, NaN, Infinity, interestingNumber(rng)])
          : jsonValue(rng);
  if (v === undefined) delete doc[key];
  else doc[key] = v;
  return `config.${key} = ${JSON.stringify(v)?.slice(0, 60)}`;
}

function tokenizerEdit(rng: Rng, doc: Record<string, unknown>): string {
  const model = obj(doc.model);
  const vocab = obj(model.vocab);
  const keys = Object.keys(vocab);
  const added = Array.isArray(doc.added_tokens) ? (doc.added_tokens as unknown[]).map(obj) : [];
  switch (rng.int(7)) {
    case 0: {
      const k = rng.pick(keys.length ? keys : ["a"]);
      vocab[k] = rng.pick([vocab[rng.pick(keys.length ? keys : ["a"])], -1, 1e9, 2 ** 31, 0.5, "3", null, keys.length, keys.length + 1000]);
      return `vocab[${JSON.stringify(k)}] = ${JSON.stringify(vocab[k])}`;
    }
    case 1: {
      const k = rng.pick(keys.length ? keys : ["a"]);
      if (rng.chance(0.5)) delete vocab[k];
      else vocab[nastyString(rng)] = vocab[k];
      return `vocab entry ${JSON.stringify(k).slice(0, 30)} removed or aliased`;
    }
    case 2: {
      const merges = Array.isArray(model.merges) ? (model.merges as unknown[]) : [];
      const bad = rng.pick<unknown>(["a", "a b c", "", " ", "zz qq", ["a"], ["a", "b", "c"], [1, 2], null, `${nastyString(rng)} ${nastyString(rng)}`, "Ġ Ġ"]);
      if (merges.length && rng.chance(0.5)) merges[rng.int(merges.length)] = bad;
      else merges.push(bad);
      model.merges = rng.chance(0.05) ? jsonValue(rng) : merges;
      return `merge ${JSON.stringify(bad)?.slice(0, 30)}`;
    }
    case 3: {
      const t = added.length ? rng.pick(added) : {};
      const field = rng.pick(["id", "content", "special", "lstrip"]);
      t[field] = field === "id" ? rng.pick([0, -1, 1e9, keys.length + 10000, added[0]?.id, 2 ** 32, "1", null]) : field === "content" ? rng.pick(["", keys[0] ?? "a", nastyString(rng)]) : jsonValue(rng);
      if (!added.length) doc.added_tokens = [t];
      return `added token .${field} = ${JSON.stringify(t[field])?.slice(0, 30)}`;
    }
    case 4:
      model.type = rng.pick(["WordPiece", "Unigram", "WordLevel", "", null, "bpe"]);
      return `model.type = ${JSON.stringify(model.type)}`;
    case 5: {
      const field = rng.pick(["pre_tokenizer", "normalizer", "decoder", "post_processor", "added_tokens", "model"]);
      doc[field] = rng.pick([null, jsonValue(rng), { type: "Split", pattern: { Regex: rng.pick(["(", "[", "(?<=a)", "\\p{Nope}", "", "a{99999999}"]) } }, { type: "Metaspace" }]);
      return `${field} replaced`;
    }
    default: {
      model[rng.pick(["byte_fallback", "unk_token", "ignore_merges", "continuing_subword_prefix"])] = jsonValue(rng);
      return "model option retyped";
    }
  }
}

function tokenizerConfigEdit(rng: Rng, doc: Record<string, unknown>): string {
  const key = rng.pick(["bos_token", "eos_token", "pad_token", "chat_template", "add_bos_token", "add_eos_token"]);
  doc[key] = rng.pick<unknown>([
    null, "", "<nope>", nastyString(rng), { content: "<|im_end|>" }, { content: 5 }, jsonValue(rng), "{% for %}", "{{ raise_exception('x') }}",
    [{ name: "default", template: "{{ messages }}" }], "{% for i in range(100000000) %}x{% endfor %}",
  ]);
  return `${key} = ${JSON.stringify(doc[key])?.slice(0, 40)}`;
}

function safetensorsEdit(rng: Rng, files: Files): string {
  const shards = Object.keys(files).filter((f) => f.endsWith(".safetensors"));
  if (!shards.length) return "no shard";
  const name = rng.pick(shards);
  const bytes = files[name] as Uint8Array;
  let names: string[] = [];
  try {
    const len = Number(Buffer.from(bytes.buffer, bytes.byteOffset, 8).readBigUInt64LE(0));
    const header: unknown = JSON.parse(Buffer.from(bytes.subarray(8, 8 + len)).toString("utf8"));
    if (typeof header === "object" && header !== null && !Array.isArray(header)) names = Object.keys(header).filter((k) => k !== "__metadata__");
  } catch {
    // An earlier edit broke the header; byte damage below still applies.
  }
  if (!names.length) {
    const r = mutateBytes(rng, bytes);
    files[name] = r.bytes;
    return `${name}: ${r.what}`;
  }
  const r = mutateVectorsFile(rng, bytes, names);
  files[name] = r.bytes;
  return `${name}: ${r.note}`;
}

function hfEdits(rng: Rng, files: Files): string {
  return applySome(rng, 3, [
    () => editJson(rng, files, "hf/config.json", (d) => configField(rng, d)),
    () => generic(rng, files, "hf/config.json"),
    () => editJson(rng, files, "hf/tokenizer.json", (d) => tokenizerEdit(rng, d)),
    () => generic(rng, files, "hf/tokenizer.json"),
    () => editJson(rng, files, "hf/tokenizer_config.json", (d) => tokenizerConfigEdit(rng, d)),
    () => {
      files["hf/chat_template.jinja"] = rng.pick(["", "{% for %}", "{{ messages[0].content }}", nastyString(rng), "{{ x.y.z() }}", "{% for i in range(100000000) %}x{% endfor %}"]);
      return "chat_template.jinja replaced";
    },
    () => safetensorsEdit(rng, files),
    () => safetensorsEdit(rng, files),
    () =>
      editJson(rng, files, "hf/model.safetensors.index.json", (d) => {
        const map = obj(d.weight_map);
        const keys = Object.keys(map);
        const k = rng.chance(0.8) && keys.length ? rng.pick(keys) : "model.layers.9.mlp.up_proj.weight";
        map[k] = rng.pick<unknown>(["missing.safetensors", "../config.json", "/etc/passwd", "", null, 3, "config.json", "model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors"]);
        if (rng.chance(0.3)) delete map[k];
        d.weight_map = rng.chance(0.05) ? jsonValue(rng) : map;
        return `weight_map[${k}] = ${JSON.stringify(map[k])}`;
      }),
    () => {
      const name = rng.pick(Object.keys(files).filter((f) => f.startsWith("hf/")));
      delete files[name];
      return `${name} removed`;
    },
  ]);
}

function loraEdits(rng: Rng, files: Files): string {
  return applySome(rng, 3, [
    () =>
      editJson(rng, files, "peft/adapter_config.json", (d) => {
        const key = rng.pick(["peft_type", "r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "target_modules", "fan_in_fan_out", "use_dora", "modules_to_save", "layers_to_transform"]);
        d[key] = rng.chance(0.6) ? rng.pick<unknown>([0, -1, 1e300, NaN, 0.5, true, "LORA", "IA3", null, { "layers.0.self_attn.q_proj": 0 }, { "layers.0.self_attn.q_proj": -3 }, ["embed_tokens"], interestingNumber(rng)]) : jsonValue(rng);
        return `adapter_config.${key} = ${JSON.stringify(d[key])?.slice(0, 40)}`;
      }),
    () => generic(rng, files, "peft/adapter_config.json"),
    () => safetensorsEdit(rng, files),
    () => safetensorsEdit(rng, files),
    () => {
      const name = rng.pick(["peft/adapter_config.json", "peft/adapter_model.safetensors", "base.gguf"]);
      delete files[name];
      return `${name} removed`;
    },
  ]);
}

export const convertTarget: Target<ConvertSeed> = {
  name: "convert",
  description: "HF checkpoints and PEFT adapters: config, tokenizer vocab/merges/added tokens, templates, shards, index, adapter config (convert hf|lora)",
  async setup() {
    const root = path.join(tmpdir(), `fuzz-convert-${process.pid}`);
    try {
      const hf = {} as Record<TinyArch, Files>;
      const cks = {} as Record<TinyArch, Awaited<ReturnType<typeof writeTinyCheckpoint>>>;
      for (const arch of ARCHS) {
        cks[arch] = await writeTinyCheckpoint(path.join(root, arch), arch, { nEmbd: 32, nHead: 4, nHeadKv: 2, nFf: 48, seed: 7 });
        hf[arch] = await filesOf(path.join(root, arch));
      }
      const base = await bytesWrittenBy(".gguf", (f) => convertHf(path.join(root, "llama"), f, { type: "f32" }).then(() => undefined));
      await writePeftAdapter(path.join(root, "peft"), cks.llama, LORA_MODULES, { alpha: 8 });
      return { hf, base, adapter: await filesOf(path.join(root, "peft")) };
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  },
  async make(rng, seed): Promise<FuzzCase> {
    if (rng.chance(0.65)) {
      const arch = rng.pick(ARCHS);
      const files: Files = Object.fromEntries(Object.entries(seed.hf[arch]).map(([k, v]) => [`hf/${k}`, v]));
      const note = hfEdits(rng, files);
      const type = rng.pick(["f32", "f16", "bf16", "q8_0"]);
      return { files, commands: [["convert", "hf", "hf", "--out", "out.gguf", "--type", type]], note: `${arch}: ${note}`, input: "hf" };
    }
    const files: Files = { "base.gguf": seed.base, ...Object.fromEntries(Object.entries(seed.adapter).map(([k, v]) => [`peft/${k}`, v])) };
    const note = loraEdits(rng, files);
    return { files, commands: [["convert", "lora", "peft", "--base", "base.gguf", "--out", "out.gguf"]], note, input: "lora" };
  },
  async run(c, env: RunEnv) {
    await runCommands(env, c.commands);
    if (!existsSync("out.gguf")) return;
    // What the converter wrote must load and run (or be refused cleanly).
    const engine = await env.engine();
    const model = c.input === "hf" ? await engine.loadModel("out.gguf") : await engine.loadModel("base.gguf", { loras: [{ path: "out.gguf", scale: 1 }] });
    try {
      // The template is rendered but not run: a template that renders a huge prompt is slow, not a hang (the template target covers templates).
      await model.renderChat([{ role: "user", content: "Hi" }]);
      const prompt = await model.tokenize("Hi <|im_end|><|eot_id|> café 123", { addSpecial: true, parseSpecial: true });
      await model.generate([{ prompt }], { maxTokens: 2, temperature: 0 });
    } finally {
      await model.dispose();
    }
  },
};
