import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { PersonaErrorCode } from "../src/errors.js";
import {
  getArray,
  getBool,
  getNumber,
  getString,
  getStringArray,
  readGguf,
  readTensorF32,
  type GgufArray,
} from "../src/engine/gguf/reader.js";
import { randomModelParamCount, writeSyntheticModel, type SyntheticModelConfig } from "../src/engine/gguf/synthetic.js";
import { CHATML_TEMPLATE, TokenType, chatmlTokenizer, writeByteBpeTokenizer } from "../src/engine/gguf/tokenizer-meta.js";
import { GgmlType, GgufValueType, f16ToF32, f32ToF16, tensorBytes } from "../src/engine/gguf/types.js";
import { GgufWriter } from "../src/engine/gguf/writer.js";
import { byteTokens } from "../src/engine/gguf/byte-unicode.js";
import { referenceForward } from "./helpers/reference-forward.js";
import { personaError } from "./helpers/errors.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "gguf-test-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function rejectsWith(p: Promise<unknown>, code: PersonaErrorCode, pattern?: RegExp): Promise<void> {
  await assert.rejects(p, personaError(code, pattern));
}

describe("types", () => {
  it("converts half floats both ways with round-to-nearest-even", () => {
    for (const v of [0, 1, -2, 0.5, 65504, 2 ** -24, -(2 ** -14), 0.333251953125]) {
      assert.equal(f16ToF32(f32ToF16(v)), v);
    }
    assert.equal(f32ToF16(1), 0x3c00);
    assert.equal(f32ToF16(-2), 0xc000);
    assert.equal(f32ToF16(1e6), 0x7c00); // overflow -> inf
    // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1).
    assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00);
    assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02);
    assert.ok(Number.isNaN(f16ToF32(f32ToF16(NaN))));
  });

  it("computes tensor sizes from the ggml block table", () => {
    assert.equal(tensorBytes(GgmlType.F32, [3, 5]), 60);
    assert.equal(tensorBytes(GgmlType.F16, [4]), 8);
    assert.equal(tensorBytes(GgmlType.Q4_0, [64, 2]), 2 * 2 * 18);
    assert.equal(tensorBytes(GgmlType.Q8_1, [32]), 36);
    assert.equal(tensorBytes(GgmlType.Q4_K, [512, 3]), 2 * 3 * 144);
    assert.equal(tensorBytes(GgmlType.Q6_K, [256]), 210);
    assert.throws(() => tensorBytes(GgmlType.Q4_K, [100]), /block size 256/);
    assert.throws(() => tensorBytes(4, [32]), /unknown ggml type 4/);
  });
});

describe("writer -> reader round trip", () => {
  it("keeps every metadata type, arrays, nested arrays and tensors", async () => {
    const path = join(dir, "roundtrip.gguf");
    const w = new GgufWriter();
    w.setU8("u8", 250).setI8("i8", -100).setU16("u16", 65000).setI16("i16", -32000);
    w.setU32("u32", 4_000_000_000).setI32("i32", -2_000_000_000);
    w.setU64("u64", 2n ** 63n + 5n).setI64("i64", -(2n ** 62n));
    w.setF32("f32", 1.5).setF64("f64", Math.PI).setBool("t", true).setBool("f", false);
    w.setString("s", "héllo ✓").setString("empty", "");
    w.setArray("a.u8", GgufValueType.UINT8, [1, 2, 255]);
    w.setArray("a.i16", GgufValueType.INT16, [-5, 7]);
    w.setI32Array("a.i32", [-1, 0, 1]);
    w.setU32Array("a.u32", [7]);
    w.setArray("a.u64", GgufValueType.UINT64, [1n, 2n ** 64n - 1n]);
    w.setArray("a.i64", GgufValueType.INT64, [-3n]);
    w.setF32Array("a.f32", [0.25, -8]);
    w.setArray("a.f64", GgufValueType.FLOAT64, [1e-300]);
    w.setArray("a.bool", GgufValueType.BOOL, [true, false, true]);
    w.setStringArray("a.str", ["x", "", "Ġthe"]);
    w.setArray("a.empty", GgufValueType.INT32, []);
    const inner: GgufArray = { itemType: GgufValueType.STRING, length: 2, items: ["p", "q"] };
    w.setArray("a.nested", GgufValueType.ARRAY, [inner, { itemType: GgufValueType.UINT8, length: 1, items: [9] }]);

    const a = Float32Array.from({ length: 12 }, (_, i) => i * 0.5 - 3);
    const h = Float32Array.from([1, -0.5, 1000, 3.14159]);
    const bits = Uint16Array.from([0x3c00, 0xc000, 0x0001]);
    w.addTensor("a", [4, 3], a);
    w.addTensor("h", [4], h, GgmlType.F16);
    w.addTensor("bits", [3], bits);
    w.addTensor("gen", [5, 2, 1], function* () {
      yield Float32Array.from([1, 2, 3]);
      yield Float32Array.from([4, 5, 6, 7, 8, 9, 10]);
    });
    await w.write(path);

    const f = await readGguf(path);
    assert.equal(f.version, 3);
    assert.equal(f.alignment, 32);
    assert.equal(f.dataOffset % 32, 0);
    const expectScalars: [string, unknown][] = [
      ["u8", 250], ["i8", -100], ["u16", 65000], ["i16", -32000], ["u32", 4_000_000_000], ["i32", -2_000_000_000],
      ["u64", 2n ** 63n + 5n], ["i64", -(2n ** 62n)], ["f32", 1.5], ["f64", Math.PI], ["t", true], ["f", false],
      ["s", "héllo ✓"], ["empty", ""],
    ];
    for (const [k, v] of expectScalars) assert.deepEqual(f.kv.get(k)?.value, v, k);
    assert.equal(f.kv.get("u8")?.type, GgufValueType.UINT8);
    assert.equal(f.kv.get("i64")?.type, GgufValueType.INT64);
    assert.deepEqual(getArray(f, "a.u8")?.items, [1, 2, 255]);
    assert.deepEqual(getArray(f, "a.i16")?.items, [-5, 7]);
    assert.deepEqual(getArray(f, "a.i32")?.items, [-1, 0, 1]);
    assert.deepEqual(getArray(f, "a.u32")?.items, [7]);
    assert.deepEqual(getArray(f, "a.u64")?.items, [1n, 2n ** 64n - 1n]);
    assert.deepEqual(getArray(f, "a.i64")?.items, [-3n]);
    assert.deepEqual(getArray(f, "a.f32")?.items, [0.25, -8]);
    assert.deepEqual(getArray(f, "a.f64")?.items, [1e-300]);
    assert.deepEqual(getArray(f, "a.bool")?.items, [true, false, true]);
    assert.deepEqual(getStringArray(f, "a.str"), ["x", "", "Ġthe"]);
    assert.deepEqual(getArray(f, "a.empty"), { itemType: GgufValueType.INT32, length: 0, items: [] });
    const nested = getArray(f, "a.nested")!;
    assert.equal(nested.itemType, GgufValueType.ARRAY);
    assert.deepEqual(nested.items, [inner, { itemType: GgufValueType.UINT8, length: 1, items: [9] }]);
    assert.throws(() => getNumber(f, "u64"), /does not fit a double/);
    assert.equal(getNumber(f, "u32"), 4_000_000_000);
    assert.equal(getBool(f, "t"), true);
    assert.equal(getString(f, "s"), "héllo ✓");
    assert.throws(() => getString(f, "u8"), personaError("E_BAD_MODEL"));

    assert.deepEqual(
      f.tensors.map((t) => [t.name, t.typeName, t.ne]),
      [["a", "F32", [4, 3]], ["h", "F16", [4]], ["bits", "F16", [3]], ["gen", "F32", [5, 2, 1]]],
    );
    for (const t of f.tensors) assert.equal(t.offset % 32, 0);
    assert.deepEqual(await readTensorF32(f, "a"), a);
    assert.deepEqual([...(await readTensorF32(f, "h"))], [1, -0.5, 1000, 3.140625]);
    assert.deepEqual([...(await readTensorF32(f, "bits"))], [1, -2, 2 ** -24]);
    assert.deepEqual([...(await readTensorF32(f, "gen"))], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    await rejectsWith(readTensorF32(f, "missing"), "E_NOT_FOUND");
  });

  it("honours a custom alignment and caps array items on request", async () => {
    const path = join(dir, "aligned.gguf");
    const w = new GgufWriter({ alignment: 64 });
    w.setStringArray("many", ["a", "b", "c", "d"]);
    w.setI32Array("nums", [1, 2, 3, 4]);
    w.addTensor("x", [3], Float32Array.from([1, 2, 3]));
    w.addTensor("y", [2], Float32Array.from([4, 5]));
    await w.write(path);
    const f = await readGguf(path, { maxArrayItems: 2 });
    assert.equal(f.alignment, 64);
    assert.equal(getNumber(f, "general.alignment"), 64);
    assert.equal(f.dataOffset % 64, 0);
    assert.equal(f.tensorsByName.get("y")?.offset, 64);
    assert.deepEqual(getArray(f, "many"), { itemType: GgufValueType.STRING, length: 4, items: ["a", "b"] });
    assert.deepEqual(getArray(f, "nums")?.items, [1, 2]);
    assert.deepEqual([...(await readTensorF32(f, "y"))], [4, 5]);
  });

  it("rejects bad input at the call site and leaves no file when a write fails", async () => {
    const w = new GgufWriter();
    assert.throws(() => w.setU8("k", 256), /not an integer in/);
    assert.throws(() => w.setString("k", 5 as unknown as string), /not a string/);
    assert.throws(() => w.addTensor("t", [2, 2], new Float32Array(3)), /3 values/);
    w.addTensor("ok", [2], new Float32Array(2));
    assert.throws(() => w.addTensor("ok", [2], new Float32Array(2)), /duplicate/);
    assert.throws(() => new GgufWriter({ alignment: 48 }), /power of 2/);

    const sub = join(dir, "failing");
    await mkdir(sub);
    const bad = new GgufWriter();
    bad.addTensor("short", [4], function* () {
      yield new Float32Array(3);
    });
    await rejectsWith(bad.write(join(sub, "out.gguf")), "E_BAD_INPUT", /expected 16/);
    assert.deepEqual(await readdir(sub), []);
  });
});

describe("reader rejects corrupt files with clear errors", () => {
  // A hand-made file: no metadata, one 1-D F32 tensor "t" of 4 values.
  function tinyFile(): Buffer {
    const head = Buffer.alloc(57);
    head.write("GGUF", 0, "latin1");
    head.writeUInt32LE(3, 4);
    head.writeBigInt64LE(1n, 8); // tensors
    head.writeBigInt64LE(0n, 16); // kv
    head.writeBigUInt64LE(1n, 24); // name length
    head.write("t", 32, "latin1");
    head.writeUInt32LE(1, 33); // n_dims
    head.writeBigInt64LE(4n, 37); // ne[0]
    head.writeInt32LE(0, 45); // F32
    head.writeBigUInt64LE(0n, 49); // offset
    const data = Buffer.alloc(16);
    data.writeFloatLE(2.5, 0);
    return Buffer.concat([head, Buffer.alloc(64 - 57), data]);
  }
  const TYPE_AT = 45;

  async function fileWith(name: string, buf: Buffer): Promise<string> {
    const p = join(dir, name);
    await writeFile(p, buf);
    return p;
  }

  it("reads the hand-made file (so the corruptions below are the only defect)", async () => {
    const f = await readGguf(await fileWith("tiny.gguf", tinyFile()));
    assert.equal(f.dataOffset, 64);
    assert.equal((await readTensorF32(f, "t"))[0], 2.5);
  });

  it("missing file -> E_NOT_FOUND", async () => {
    await rejectsWith(readGguf(join(dir, "nope.gguf")), "E_NOT_FOUND", /not found/);
  });

  it("bad magic, short files and unsupported versions -> E_BAD_MODEL", async () => {
    const b = tinyFile();
    b.write("GGML", 0, "latin1");
    await rejectsWith(readGguf(await fileWith("magic.gguf", b)), "E_BAD_MODEL", /not a GGUF file/);
    await rejectsWith(readGguf(await fileWith("two.gguf", Buffer.from("GG"))), "E_BAD_MODEL", /not a GGUF file/);
    await rejectsWith(readGguf(await fileWith("empty.gguf", Buffer.alloc(0))), "E_BAD_MODEL");
    for (const [v, re] of [[1, /v1/], [4, /unsupported GGUF version 4/], [0x03000000, /big-endian/]] as const) {
      const c = tinyFile();
      c.writeUInt32LE(v, 4);
      await rejectsWith(readGguf(await fileWith(`v${v}.gguf`, c)), "E_BAD_MODEL", re);
    }
  });

  it("truncated header -> E_BAD_MODEL naming the truncation", async () => {
    const b = tinyFile().subarray(0, 40);
    await rejectsWith(readGguf(await fileWith("trunc-head.gguf", b)), "E_BAD_MODEL", /truncated GGUF header/);
  });

  it("truncated tensor data -> E_BAD_MODEL naming the tensor", async () => {
    const p = await fileWith("trunc-data.gguf", tinyFile());
    await truncate(p, 64 + 10);
    await rejectsWith(readGguf(p), "E_BAD_MODEL", /truncated tensor data: tensor 't' ends at byte 80/);
  });

  it("unknown ggml type -> E_BAD_MODEL", async () => {
    for (const t of [4, 99, -1]) {
      const b = tinyFile();
      b.writeInt32LE(t, TYPE_AT);
      await rejectsWith(readGguf(await fileWith(`type${t}.gguf`, b)), "E_BAD_MODEL", new RegExp(`unknown ggml type ${t}`));
    }
  });

  it("absurd counts, lengths, dims and offsets -> E_BAD_MODEL without huge allocations", async () => {
    const cases: [string, (b: Buffer) => void, RegExp][] = [
      ["ntensors", (b) => b.writeBigInt64LE(1n << 40n, 8), /claims 1099511627776 tensors/],
      ["nkv", (b) => b.writeBigInt64LE(-1n, 16), /metadata entries/],
      ["namelen", (b) => b.writeBigUInt64LE(1n << 50n, 24), /string of/],
      ["ndims", (b) => b.writeUInt32LE(7, 33), /7 dimensions/],
      ["ne", (b) => b.writeBigInt64LE(-4n, 37), /dimension 0 is -4/],
      ["offset", (b) => b.writeBigUInt64LE(32n, 49), /offset 32, expected 0/],
    ];
    for (const [name, patch, re] of cases) {
      const b = tinyFile();
      patch(b);
      await rejectsWith(readGguf(await fileWith(`${name}.gguf`, b)), "E_BAD_MODEL", re);
    }
    // A metadata array claiming 2^40 items in a small file.
    const w = new GgufWriter();
    w.setI32Array("arr", [1, 2, 3]);
    const p = join(dir, "arr.gguf");
    await w.write(p);
    const buf = await readFile(p);
    const at = buf.indexOf(Buffer.from("arr")) + 3 + 4 + 4; // key, value type, item type
    buf.writeBigUInt64LE(1n << 40n, at);
    await rejectsWith(readGguf(await fileWith("arr-bad.gguf", buf)), "E_BAD_MODEL", /claims 1099511627776 items/);
  });
});

describe("tokenizer metadata", () => {
  it("builds the ChatML vocabulary: bytes, merges, control tokens", async () => {
    const tok = chatmlTokenizer();
    assert.deepEqual(tok.tokens.slice(0, 256), byteTokens());
    assert.ok(tok.tokens.length > 300 && tok.tokens.length <= 512, `vocab ${tok.tokens.length}`);
    assert.equal(new Set(tok.tokens).size, tok.tokens.length);
    assert.equal(tok.tokens[tok.bos], "<|endoftext|>");
    assert.equal(tok.tokens[tok.eos], "<|im_end|>");
    assert.equal(tok.eot, tok.eos);
    assert.ok(tok.tokens.includes("Ġthe") && tok.tokens.includes("<|im_start|>"));

    const w = new GgufWriter();
    writeByteBpeTokenizer(w, tok);
    const p = join(dir, "tok.gguf");
    await w.write(p);
    const f = await readGguf(p);
    assert.equal(getString(f, "tokenizer.ggml.model"), "gpt2");
    assert.equal(getString(f, "tokenizer.ggml.pre"), "gpt-2");
    assert.equal(getString(f, "tokenizer.chat_template"), CHATML_TEMPLATE);
    assert.equal(getBool(f, "tokenizer.ggml.add_bos_token"), false);
    assert.equal(f.kv.get("tokenizer.ggml.eos_token_id")?.type, GgufValueType.UINT32);
    assert.equal(getNumber(f, "tokenizer.ggml.eot_token_id"), tok.eot);
    const types = getArray(f, "tokenizer.ggml.token_type")!;
    assert.equal(types.itemType, GgufValueType.INT32); // llama-vocab.cpp requires INT32
    const controls = tok.tokens.filter((_, i) => types.items[i] === TokenType.CONTROL);
    assert.deepEqual(controls, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
    assert.deepEqual(getStringArray(f, "tokenizer.ggml.merges"), tok.merges);
  });

  it("rejects merges that leave the vocabulary and special ids out of range", () => {
    const tok = chatmlTokenizer();
    assert.throws(() => writeByteBpeTokenizer(new GgufWriter(), { ...tok, merges: ["Ġ zz"] }), /missing from the vocabulary/);
    assert.throws(() => writeByteBpeTokenizer(new GgufWriter(), { ...tok, eos: tok.tokens.length }), /eos token id/);
    assert.throws(() => writeByteBpeTokenizer(new GgufWriter(), { ...tok, tokenTypes: [1] }), /token types/);
  });
});

const TINY: SyntheticModelConfig = { arch: "llama", nLayer: 2, nEmbd: 32, nHead: 4, nHeadKv: 2, nFf: 48, contextLength: 64, seed: 3 };

describe("synthetic models", () => {
  it("writes every tensor and key llama.cpp expects for llama", async () => {
    const p = join(dir, "llama.gguf");
    await writeSyntheticModel(p, TINY);
    const f = await readGguf(p);
    const nVocab = chatmlTokenizer().tokens.length;
    assert.equal(getString(f, "general.architecture"), "llama");
    for (const [k, v] of [
      ["llama.block_count", 2], ["llama.embedding_length", 32], ["llama.feed_forward_length", 48],
      ["llama.attention.head_count", 4], ["llama.attention.head_count_kv", 2], ["llama.context_length", 64],
      ["llama.rope.dimension_count", 8], ["llama.rope.freq_base", 10000],
    ] as const) {
      assert.equal(getNumber(f, k), v, k);
      assert.equal(f.kv.get(k)?.type, k.endsWith("freq_base") ? GgufValueType.FLOAT32 : GgufValueType.UINT32, k);
    }
    assert.ok(Math.abs(getNumber(f, "llama.attention.layer_norm_rms_epsilon")! - 1e-5) < 1e-12);
    const shapes = Object.fromEntries(f.tensors.map((t) => [t.name, t.ne]));
    assert.deepEqual(shapes["token_embd.weight"], [32, nVocab]);
    assert.deepEqual(shapes["output.weight"], [32, nVocab]);
    assert.deepEqual(shapes["output_norm.weight"], [32]);
    assert.deepEqual(shapes["blk.1.attn_q.weight"], [32, 32]);
    assert.deepEqual(shapes["blk.1.attn_k.weight"], [32, 16]);
    assert.deepEqual(shapes["blk.1.attn_v.weight"], [32, 16]);
    assert.deepEqual(shapes["blk.1.attn_output.weight"], [32, 32]);
    assert.deepEqual(shapes["blk.0.ffn_gate.weight"], [32, 48]);
    assert.deepEqual(shapes["blk.0.ffn_up.weight"], [32, 48]);
    assert.deepEqual(shapes["blk.0.ffn_down.weight"], [48, 32]);
    assert.ok(!("blk.0.attn_q.bias" in shapes));
    assert.equal(f.tensors.length, 2 + 9 * 2 + 1);
    const total = f.tensors.reduce((s, t) => s + t.ne.reduce((a, b) => a * b, 1), 0);
    assert.equal(randomModelParamCount(TINY), total);

    // Weights are random with the requested spread; norms are ~1 but not exactly 1.
    const q = await readTensorF32(f, "blk.0.attn_q.weight");
    const std = Math.sqrt(q.reduce((s, v) => s + v * v, 0) / q.length);
    assert.ok(std > 0.015 && std < 0.025, `std ${std}`);
    const norm = await readTensorF32(f, "blk.0.attn_norm.weight");
    const mean = norm.reduce((s, v) => s + v, 0) / norm.length;
    assert.ok(Math.abs(mean - 1) < 0.1 && norm.some((v) => Math.abs(v - 1) > 0.01));
  });

  it("adds qwen2 biases, drops output.weight when tied, stores F16 on request", async () => {
    const p = join(dir, "qwen2.gguf");
    await writeSyntheticModel(p, { ...TINY, arch: "qwen2", tiedEmbeddings: true, type: "f16" });
    const f = await readGguf(p);
    assert.equal(getString(f, "general.architecture"), "qwen2");
    assert.equal(getNumber(f, "qwen2.rope.freq_base"), 1_000_000);
    assert.deepEqual(f.tensorsByName.get("blk.0.attn_q.bias")?.ne, [32]);
    assert.deepEqual(f.tensorsByName.get("blk.0.attn_k.bias")?.ne, [16]);
    assert.deepEqual(f.tensorsByName.get("blk.0.attn_v.bias")?.ne, [16]);
    assert.ok(!f.tensorsByName.has("output.weight"));
    assert.equal(f.tensorsByName.get("blk.0.ffn_up.weight")?.typeName, "F16");
    assert.equal(f.tensorsByName.get("blk.0.ffn_norm.weight")?.typeName, "F32");
  });

  it("is deterministic in the seed", async () => {
    const [a, b, c] = [join(dir, "s1.gguf"), join(dir, "s2.gguf"), join(dir, "s3.gguf")];
    await writeSyntheticModel(a, TINY);
    await writeSyntheticModel(b, TINY);
    await writeSyntheticModel(c, { ...TINY, seed: 4 });
    assert.ok((await readFile(a)).equals(await readFile(b)));
    assert.ok(!(await readFile(a)).equals(await readFile(c)));
  });

  it("rejects impossible shapes", async () => {
    await rejectsWith(writeSyntheticModel(join(dir, "x.gguf"), { ...TINY, nHeadKv: 3 }), "E_BAD_INPUT");
    await rejectsWith(writeSyntheticModel(join(dir, "x.gguf"), { ...TINY, nEmbd: 30 }), "E_BAD_INPUT");
  });
});

describe("reference forward", () => {
  for (const arch of ["llama", "qwen2"] as const) {
    it(`${arch}: layer 0 is the embedding rows, shapes follow the model, and it is causal`, async () => {
      const p = join(dir, `ref-${arch}.gguf`);
      await writeSyntheticModel(p, { ...TINY, arch, init: { std: 0.2 } });
      const f = await readGguf(p);
      const nVocab = chatmlTokenizer().tokens.length;
      const tokens = [5, 300, 17, 42, 260];
      const r = await referenceForward(f, tokens);
      assert.equal(r.residuals.length, TINY.nLayer + 1);
      assert.equal(r.logits.length, tokens.length * nVocab);
      const embd = await readTensorF32(f, "token_embd.weight");
      tokens.forEach((tok, t) => {
        assert.deepEqual([...r.residuals[0]!.subarray(t * 32, t * 32 + 32)], [...embd.subarray(tok * 32, tok * 32 + 32)]);
      });
      // Blocks change the residual.
      assert.ok(r.residuals[1]!.some((v, i) => Math.abs(v - r.residuals[0]![i]!) > 1e-3));

      // Causal: a different later token leaves earlier positions untouched and changes its own.
      const r2 = await referenceForward(f, [...tokens.slice(0, 3), 99, 100]);
      for (let l = 0; l <= TINY.nLayer; l++) {
        assert.deepEqual(r2.residuals[l]!.subarray(0, 3 * 32), r.residuals[l]!.subarray(0, 3 * 32));
      }
      assert.ok(r2.residuals[TINY.nLayer]!.subarray(4 * 32).some((v, i) => v !== r.residuals[TINY.nLayer]![4 * 32 + i]));
      // Attention mixes positions: changing token 0 changes the last position's residual.
      const r3 = await referenceForward(f, [6, ...tokens.slice(1)]);
      assert.ok(r3.residuals[1]!.subarray(4 * 32).some((v, i) => Math.abs(v - r.residuals[1]![4 * 32 + i]!) > 1e-9));
    });
  }

  it("tied models project the final norm onto token_embd", async () => {
    const p = join(dir, "ref-tied.gguf");
    await writeSyntheticModel(p, { ...TINY, tiedEmbeddings: true, init: { std: 0.2 } });
    const f = await readGguf(p);
    const tokens = [1, 2, 3];
    const r = await referenceForward(f, tokens);
    const embd = await readTensorF32(f, "token_embd.weight");
    const norm = await readTensorF32(f, "output_norm.weight");
    const last = r.residuals[TINY.nLayer]!;
    const nVocab = embd.length / 32;
    for (let t = 0; t < tokens.length; t++) {
      const x = last.subarray(t * 32, t * 32 + 32);
      const rms = Math.sqrt(x.reduce((s, v) => s + v * v, 0) / 32 + 1e-5);
      for (const v of [0, 7, nVocab - 1]) {
        let dot = 0;
        for (let i = 0; i < 32; i++) dot += (x[i]! / rms) * norm[i]! * embd[v * 32 + i]!;
        assert.ok(Math.abs(dot - r.logits[t * nVocab + v]!) < 1e-6 * Math.max(1, Math.abs(dot)));
      }
    }
  });
});
