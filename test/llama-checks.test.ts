/**
 * Model files that used to abort the process inside llama.cpp (found by `npm run fuzz`), now
 * refused in TypeScript with E_BAD_MODEL naming the field. Each is the tiny fuzz seed model with
 * one edit, written by the project's GGUF writer, and loaded by a real engine: a regression here
 * kills the test process.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import type { LoadModelOptions } from "../src/engine/Engine.js";
import { GgufValueType } from "../src/engine/gguf/types.js";
import { PersonaError } from "../src/errors.js";
import { TINY_MODEL, cloneSpec, setKv, tinyModelSpec, writeSpec, type GgufSpec } from "../scripts/fuzz/targets/gguf.js";

let dir: string;
let engine: Engine;
let base: GgufSpec;
let n = 0;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "llama-checks-"));
  engine = await Engine.create({ gpu: "cpu", threads: 1 });
  base = await tinyModelSpec();
});
after(async () => {
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});

function tokensOf(s: GgufSpec): string[] {
  const v = s.kv.find((x) => x.key === "tokenizer.ggml.tokens")!.value;
  assert.ok(typeof v === "object");
  return v.items as string[];
}

async function modelWith(edit: (s: GgufSpec) => void, alignment?: number): Promise<string> {
  const s = cloneSpec(base);
  edit(s);
  if (alignment !== undefined) s.alignment = alignment;
  const file = path.join(dir, `m${n++}.gguf`);
  await writeFile(file, await writeSpec(s));
  return file;
}

async function refused(file: string, opts: LoadModelOptions, pattern: RegExp): Promise<void> {
  await assert.rejects(engine.loadModel(file, opts), (e: unknown) => {
    assert.ok(e instanceof PersonaError, String(e));
    assert.equal(e.code, "E_BAD_MODEL");
    assert.match(e.message, pattern);
    return true;
  });
}

describe("llama.cpp load-time asserts are refused first", () => {
  it("loads the unedited seed model (vocabulary only and fully)", async () => {
    const file = await modelWith(() => undefined);
    const m = await engine.loadModel(file, { vocabOnly: true });
    assert.equal(m.info.nVocab, tokensOf(base).length);
    await m.dispose();
    await (await engine.loadModel(file)).dispose();
  });

  it("a token listed twice (llama-vocab.cpp id_to_token/token_to_id assert)", async () => {
    const file = await modelWith((s) => {
      const t = tokensOf(s);
      t[160] = t[105]!;
    });
    await refused(file, { vocabOnly: true }, /tokenizer\.ggml\.tokens holds "i" twice \(ids 105 and 160\)/);
    await refused(file, {}, /twice/);
  });

  it("an empty token whose stand-in name [EMPTY_<id>] is taken by another token", async () => {
    const file = await modelWith((s) => {
      const t = tokensOf(s);
      t[46] = "[EMPTY_164]";
      t[164] = "";
    });
    await refused(file, { vocabOnly: true }, /"\[EMPTY_164\]" twice \(ids 46 and 164\)/);
  });

  it("a model without a vocabulary (tokenizer not initialised assert)", async () => {
    const file = await modelWith((s) => setKv(s, "tokenizer.ggml.model", GgufValueType.STRING, "none"));
    await refused(file, { vocabOnly: true }, /tokenizer\.ggml\.model is "none"/);
  });

  it("a SentencePiece vocabulary without byte tokens (byte_to_token's map lookup throws through the C API)", async () => {
    const file = await modelWith((s) => setKv(s, "tokenizer.ggml.model", GgufValueType.STRING, "llama"));
    await refused(file, { vocabOnly: true }, /lacks the byte token <0x00>/);
  });

  it("a tokenizer family outside the supported ones (the t5 tokenizer segfaulted)", async () => {
    const file = await modelWith((s) => setKv(s, "tokenizer.ggml.model", GgufValueType.STRING, "t5"));
    await refused(file, { vocabOnly: true }, /tokenizer\.ggml\.model is "t5"; persona-vectors supports "gpt2", "llama", "gemma4"/);
  });

  it("an F16 norm weight (ggml-cpu binary op abort at the first decode)", async () => {
    const file = await modelWith((s) => {
      s.tensors.find((t) => t.name === "output_norm.weight")!.f16 = true;
    });
    await refused(file, {}, /one-dimensional tensor 'output_norm\.weight' is F16; norms and biases must be F32/);
  });

  it("a vocabulary that adds a BOS token it does not have (tokenize assert)", async () => {
    const file = await modelWith((s) => {
      tokensOf(s).length = 10; // so that BPE's default BOS id 11 is out of range too
      s.kv = s.kv.filter((e) => e.key !== "tokenizer.ggml.token_type" && e.key !== "tokenizer.ggml.bos_token_id");
      setKv(s, "tokenizer.ggml.add_bos_token", GgufValueType.BOOL, true);
    });
    await refused(file, { vocabOnly: true }, /add_bos_token is on but the vocabulary has no BOS token/);
  });

  it("a transformer without a head count (n_embd / n_head: SIGFPE in olmo2's tensor set-up)", async () => {
    const file = await modelWith((s) => {
      for (const e of s.kv) if (e.key.startsWith("llama.")) e.key = `olmo2.${e.key.slice(6)}`;
      setKv(s, "general.architecture", GgufValueType.STRING, "olmo2");
      s.kv = s.kv.filter((e) => e.key !== "olmo2.attention.head_count");
    });
    await refused(file, {}, /olmo2\.attention\.head_count is missing/);
  });

  it("a weight matrix of a type ggml-cpu cannot multiply (segfault at the first decode)", async () => {
    const s = cloneSpec(base);
    const bytes = await writeSpec(s);
    // The writer only writes F32/F16: patch blk.0.attn_v.weight's type id in the header to I32 (same size).
    const name = Buffer.from("blk.0.attn_v.weight");
    const at = Buffer.from(bytes).indexOf(name) + name.length + 4 + 2 * 8; // n_dims, ne[0], ne[1]
    Buffer.from(bytes.buffer, bytes.byteOffset).writeInt32LE(26, at);
    const file = path.join(dir, "i32.gguf");
    await writeFile(file, bytes);
    await refused(file, {}, /tensor 'blk\.0\.attn_v\.weight' is I32, not a weight type llama\.cpp can multiply/);
  });

  it("more experts used than the model has (load_hparams asserts)", async () => {
    const file = await modelWith((s) => setKv(s, "llama.expert_used_count", GgufValueType.UINT32, 1024));
    await refused(file, {}, /llama\.expert_used_count is 1024, more than llama\.expert_count 0/);
    // hyperparameters are not read for a vocabulary-only load
    await (await engine.loadModel(file, { vocabOnly: true })).dispose();
  });

  it("a block count beyond LLAMA_MAX_LAYERS", async () => {
    const file = await modelWith((s) => setKv(s, "llama.block_count", GgufValueType.UINT32, 513));
    await refused(file, {}, /llama\.block_count is 513, outside 1\.\.512/);
  });

  it("an unknown rope scaling type", async () => {
    const file = await modelWith((s) => setKv(s, "llama.rope.scaling.type", GgufValueType.STRING, "bogus"));
    await refused(file, {}, /llama\.rope\.scaling\.type is "bogus"/);
  });

  it("head sizes a qwen2 graph asserts equal (models/qwen2.cpp:56-57, an abort at the first context)", async () => {
    const qwen2 = await tinyModelSpec({ ...TINY_MODEL, arch: "qwen2" });
    const write = async (edit: (s: GgufSpec) => void) => {
      const s = cloneSpec(qwen2);
      edit(s);
      const file = path.join(dir, `q${n++}.gguf`);
      await writeFile(file, await writeSpec(s));
      return file;
    };
    const m = await engine.loadModel(await write(() => undefined));
    await m.generate([{ prompt: await m.tokenize("Hi") }], { maxTokens: 1, temperature: 0 });
    await m.dispose();
    await refused(await write((s) => setKv(s, "qwen2.rope.dimension_count", GgufValueType.UINT32, 4)), {}, /qwen2\.rope\.dimension_count \(4\) equal to the head size 8/);
    await refused(await write((s) => setKv(s, "qwen2.attention.key_length", GgufValueType.UINT32, 4)), {}, /qwen2\.attention\.key_length \(4\) and qwen2\.attention\.value_length \(8\) equal/);
  });

  it("loader asserts of lfm2moe/glm4moe (experts), jamba (ssm.inner_size) and wavtokenizer-dec (posnet/convnext widths)", async () => {
    const file = await modelWith((s) => {
      for (const e of s.kv) e.key = e.key.replace(/^llama\./, "lfm2moe.");
      setKv(s, "general.architecture", GgufValueType.STRING, "lfm2moe");
    });
    await refused(file, {}, /lfm2moe model needs lfm2moe\.expert_count and lfm2moe\.expert_used_count above 0/);
    const as = (arch: string, edit: (s: GgufSpec) => void = () => undefined) =>
      modelWith((s) => {
        for (const e of s.kv) e.key = e.key.replace(/^llama\./, `${arch}.`);
        setKv(s, "general.architecture", GgufValueType.STRING, arch);
        edit(s);
      });
    await refused(await as("glm4moe"), {}, /an glm4moe model needs glm4moe\.expert_count/);
    await refused(await as("jamba", (s) => setKv(s, "jamba.ssm.inner_size", GgufValueType.UINT32, 20)), {}, /jamba\.ssm\.inner_size is 20; the jamba loader needs twice jamba\.embedding_length \(32\)/);
    await refused(
      await as("wavtokenizer-dec", (s) => {
        setKv(s, "wavtokenizer-dec.posnet.embedding_length", GgufValueType.UINT32, 8);
        setKv(s, "wavtokenizer-dec.convnext.embedding_length", GgufValueType.UINT32, 16);
      }),
      {},
      /posnet\.embedding_length \(8\) and wavtokenizer-dec\.convnext\.embedding_length \(16\) must be equal/,
    );
  });

  it("tensor data that cannot be mapped on a 32-byte boundary (ggml-backend buffer assert)", async () => {
    const file = await modelWith(() => undefined, 1);
    await refused(file, {}, /not a multiple of 32 \(general\.alignment is 1\)/);
    // copied into allocated buffers instead of mapped, the same file loads
    await (await engine.loadModel(file, { noMmap: true })).dispose();
  });
});
