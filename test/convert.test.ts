/**
 * Hugging Face checkpoints and PEFT adapters → GGUF, checked the way a user would: llama.cpp loads
 * the result, tokenizes exactly as Hugging Face's own `tokenizers` does on the same tokenizer.json,
 * and the residual stream matches a float64 forward pass computed from the safetensors (with the
 * adapter: from W + scale·s·B·A, s = alpha/r or alpha/√r).
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Tokenizer } from "tokenizers";
import { convertHf } from "../src/convert/hf.js";
import { convertLora } from "../src/convert/lora.js";
import { Engine } from "../src/engine/Engine.js";
import type { Model } from "../src/engine/Model.js";
import { getBool, getNumber, getString, readGguf, readTensorF32 } from "../src/engine/gguf/reader.js";
import { readSafetensors } from "../src/vectors/safetensors.js";
import { CORPUS, type TinyArch, type TinyCheckpoint, writePeftAdapter, writeTinyCheckpoint } from "./helpers/hf-checkpoint.js";
import { personaError } from "./helpers/errors.js";
import { type ReferenceResult, reduce, referenceForwardFrom, relErr } from "./helpers/reference-forward.js";
import { runCli } from "./helpers/cli.js";

let dir: string;
let engine: Engine;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-convert-"));
  engine = await Engine.create({ gpu: "cpu", threads: 2 });
});
after(async () => {
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});

const HF_NAMES: Record<string, string> = {
  "attn_norm.weight": "input_layernorm.weight",
  "ffn_norm.weight": "post_attention_layernorm.weight",
  "attn_q.weight": "self_attn.q_proj.weight",
  "attn_k.weight": "self_attn.k_proj.weight",
  "attn_v.weight": "self_attn.v_proj.weight",
  "attn_output.weight": "self_attn.o_proj.weight",
  "attn_q.bias": "self_attn.q_proj.bias",
  "attn_k.bias": "self_attn.k_proj.bias",
  "attn_v.bias": "self_attn.v_proj.bias",
  "attn_q_norm.weight": "self_attn.q_norm.weight",
  "attn_k_norm.weight": "self_attn.k_norm.weight",
  "ffn_gate.weight": "mlp.gate_proj.weight",
  "ffn_up.weight": "mlp.up_proj.weight",
  "ffn_down.weight": "mlp.down_proj.weight",
};

/**
 * The forward pass as Hugging Face computes it, from the safetensors weights as saved: no Q/K
 * permutation, rotate_half RoPE (NEOX) for every family, inverse frequencies scaled for Llama 3.1.
 */
function hfForward(ck: TinyCheckpoint, tokens: number[], delta?: (hfName: string, w: Float32Array) => Float32Array): Promise<ReferenceResult> {
  const c = ck.config as Record<string, number> & { rope_scaling?: Record<string, number> };
  const headDim = c.head_dim ?? c.hidden_size! / c.num_attention_heads!;
  const hf = (name: string): string | undefined => {
    if (name === "token_embd.weight") return "model.embed_tokens.weight";
    if (name === "output_norm.weight") return "model.norm.weight";
    if (name === "output.weight") return "lm_head.weight";
    const m = /^blk\.(\d+)\.(.+)$/.exec(name);
    return m && HF_NAMES[m[2]!] ? `model.layers.${m[1]}.${HF_NAMES[m[2]!]}` : undefined;
  };
  let factors: Float32Array | undefined;
  if (c.rope_scaling) {
    // transformers' _compute_llama3_parameters, written out independently of the converter.
    const { factor, low_freq_factor: lo, high_freq_factor: hi, original_max_position_embeddings: old } = c.rope_scaling as Record<string, number>;
    factors = Float32Array.from({ length: headDim / 2 }, (_, i) => {
      const invFreq = 1 / c.rope_theta! ** ((2 * i) / headDim);
      const wavelen = (2 * Math.PI) / invFreq;
      if (wavelen < old! / hi!) return 1;
      if (wavelen > old! / lo!) return factor!;
      const smooth = (old! / wavelen - lo!) / (hi! - lo!);
      return invFreq / ((1 - smooth) * (invFreq / factor!) + smooth * invFreq);
    });
  }
  return referenceForwardFrom(
    {
      nLayer: c.num_hidden_layers!,
      nEmbd: c.hidden_size!,
      nFf: c.intermediate_size!,
      nHead: c.num_attention_heads!,
      nHeadKv: c.num_key_value_heads!,
      headDim,
      eps: c.rms_norm_eps!,
      ropeBase: c.rope_theta!,
      neox: true,
      tensor: async (name) => {
        if (name === "rope_freqs.weight") return factors;
        const n = hf(name);
        const w = n !== undefined ? ck.weights.get(n)?.data : undefined;
        return w && delta ? delta(n!, w) : w;
      },
    },
    tokens,
  );
}

/** Checks the engine's residual stream against `ref`; returns the largest relative change from `unchanged` (when given). */
async function checkActivations(model: Model, ref: (tokens: number[]) => Promise<ReferenceResult>, unchanged?: (tokens: number[]) => Promise<ReferenceResult>): Promise<number> {
  const sample = await model.encodeConversation([
    { role: "user", content: "Où est la gare? 駅はどこ?" },
    { role: "assistant", content: "Two streets north, 123 Main St." },
  ]);
  const [acts] = await model.capture([sample]);
  const r = await ref(Array.from(sample.tokens));
  const n = model.info.nEmbd;
  const p = sample.promptLength;
  assert.ok(relErr(acts!.promptAvg, reduce(r.residuals, n, 0, p)) < 1e-4, `prompt_avg ${relErr(acts!.promptAvg, reduce(r.residuals, n, 0, p))}`);
  assert.ok(relErr(acts!.promptLast, reduce(r.residuals, n, p - 1, p)) < 1e-4, "prompt_last");
  assert.ok(relErr(acts!.responseAvg, reduce(r.residuals, n, p, sample.tokens.length)) < 1e-4, "response_avg");
  return unchanged ? relErr(acts!.promptAvg, reduce((await unchanged(Array.from(sample.tokens))).residuals, n, 0, p)) : 0;
}

const SAMPLE = [
  ...CORPUS,
  "Unseen words: Zyzzyva, Ελληνικά, हिन्दी, 한국어 텍스트, ẞtraße",
  "Specials inline: <|im_start|>user\nhello<|im_end|> and <|begin_of_text|><|eot_id|> <tool>call</tool>",
  "   leading spaces, trailing   \n\n\n",
  "numbers 1 22 333 4444 55555 3.14159 -0.5e10",
  "I'M SHOUTING, you'LL see, we'Re fine",
];

describe("persona convert hf", () => {
  for (const [arch, extra] of [
    ["llama", { ropeScaling: true }],
    ["qwen2", {}],
    ["qwen3", { headDim: 32 }],
  ] as [TinyArch, { ropeScaling?: boolean; headDim?: number }][]) {
    test(`${arch}: llama.cpp loads it, tokenizes like tokenizers, and its activations match the safetensors forward`, async () => {
      const ck = await writeTinyCheckpoint(path.join(dir, `hf-${arch}`), arch, extra);
      const out = path.join(dir, `${arch}.gguf`);
      const res = await convertHf(ck.dir, out, { type: "f32" });
      assert.equal(res.arch, arch);
      const g = await readGguf(out);
      assert.equal(getString(g, "tokenizer.ggml.pre"), arch === "llama" ? "llama-bpe" : "qwen2");
      assert.equal(getBool(g, "tokenizer.ggml.add_bos_token"), arch === "llama");
      assert.ok(getString(g, "tokenizer.chat_template")!.includes(arch === "llama" ? "start_header_id" : "im_start"));
      if (arch === "llama") assert.ok(g.tensorsByName.has("rope_freqs.weight"));

      const model = await engine.loadModel(out);
      try {
        const hfTok = Tokenizer.fromFile(path.join(ck.dir, "tokenizer.json"));
        for (const text of SAMPLE) {
          const want = (await hfTok.encode(text, null, { addSpecialTokens: true })).getIds();
          const got = Array.from(await model.tokenize(text, { addSpecial: true, parseSpecial: true }));
          assert.deepEqual(got, want, JSON.stringify(text));
        }
        await checkActivations(model, (tokens) => hfForward(ck, tokens));
      } finally {
        await model.dispose();
      }
    });
  }

  test("f16, bf16 and q8_0 outputs load and stay close; bad checkpoints are refused with reasons", async () => {
    const ck = await writeTinyCheckpoint(path.join(dir, "hf-q"), "qwen2", { nEmbd: 64, seed: 3 });
    for (const type of ["f16", "bf16", "q8_0"] as const) {
      const out = path.join(dir, `q-${type}.gguf`);
      await convertHf(ck.dir, out, { type });
      const g = await readGguf(out);
      assert.equal(g.tensorsByName.get("blk.0.attn_q.weight")!.typeName, type.toUpperCase());
      assert.equal(g.tensorsByName.get("blk.0.attn_norm.weight")!.typeName, "F32");
      assert.equal(getNumber(g, "general.file_type"), { f16: 1, bf16: 32, q8_0: 7 }[type]);
      // Every stored value is the original rounded to the type's grid (Q8_0: within half a step of its block's scale).
      const orig = ck.weights.get("model.layers.1.mlp.down_proj.weight")!.data;
      const stored = await readTensorF32(g, "blk.1.ffn_down.weight");
      for (let i = 0; i < orig.length; i++) {
        // Q8_0: half a step of the block's scale, plus that scale's own F16 rounding; f16 also has an absolute half-step for subnormals.
        const blockMax = Math.max(...orig.subarray(i & ~31, (i & ~31) + 32).map(Math.abs));
        const tol =
          type === "q8_0" ? (blockMax / 127) * (0.5 + 127 * 2 ** -11) : type === "f16" ? Math.abs(orig[i]!) * 2 ** -11 + 2 ** -25 : Math.abs(orig[i]!) * 2 ** -8;
        assert.ok(Math.abs(stored[i]! - orig[i]!) <= tol + 1e-12, `${type} value ${i}: ${stored[i]} vs ${orig[i]}`);
      }
      const model = await engine.loadModel(out);
      try {
        const sample = await model.encodeConversation([{ role: "user", content: "hello there" }, { role: "assistant", content: "hi" }]);
        const [acts] = await model.capture([sample]);
        const r = await hfForward(ck, Array.from(sample.tokens));
        const err = relErr(acts!.promptAvg, reduce(r.residuals, model.info.nEmbd, 0, sample.promptLength));
        assert.ok(err < (type === "f16" ? 5e-3 : 6e-2), `${type}: ${err}`);
      } finally {
        await model.dispose();
      }
    }
    await assert.rejects(convertHf(path.join(dir, "nowhere"), path.join(dir, "x.gguf")), personaError("E_NOT_FOUND", /config\.json/));
    // A pre-tokenizer llama.cpp would split differently, and an architecture it is not written for, are refused.
    const tokFile = path.join(ck.dir, "tokenizer.json");
    const tok = JSON.parse(await readFile(tokFile, "utf8")) as { pre_tokenizer: { pretokenizers: { pattern?: { Regex: string } }[] } };
    tok.pre_tokenizer.pretokenizers[0]!.pattern!.Regex = "\\s+|\\S+";
    await writeFile(tokFile, JSON.stringify(tok));
    await assert.rejects(convertHf(ck.dir, path.join(dir, "x.gguf")), personaError("E_BAD_MODEL", /unknown pre-tokenizer regex/));
    const cfgFile = path.join(ck.dir, "config.json");
    await writeFile(cfgFile, JSON.stringify({ ...ck.config, architectures: ["GPT2LMHeadModel"] }));
    await assert.rejects(convertHf(ck.dir, path.join(dir, "x.gguf")), personaError("E_BAD_MODEL", /GPT2LMHeadModel is not supported/));
  });
});

describe("persona convert lora + engine LoRA loading", () => {
  for (const arch of ["llama", "qwen2"] as const) {
    test(`${arch}: activations with the adapter equal the forward with W + scale·s·B·A (rsLoRA, per-module ranks and alphas)`, async () => {
      const ck = await writeTinyCheckpoint(path.join(dir, `lb-${arch}`), arch, { seed: 11 });
      const base = path.join(dir, `lb-${arch}.gguf`);
      await convertHf(ck.dir, base, { type: "f32" });
      const modules = { "model.layers.0.self_attn.q_proj": 4, "model.layers.1.self_attn.k_proj": 2, "model.layers.0.self_attn.v_proj": 3, "model.layers.1.mlp.down_proj": 5 };
      const adapters: [string, { alpha: number; rslora?: boolean; alphaPattern?: Record<string, number> }][] = [
        ["plain", { alpha: 16 }],
        ["rslora", { alpha: 8, rslora: true, alphaPattern: { "layers.1.mlp.down_proj": 3 } }],
      ];
      for (const [kind, cfg] of adapters) {
        const peft = path.join(dir, `peft-${arch}-${kind}`);
        const ab = await writePeftAdapter(peft, ck, modules, cfg);
        const out = path.join(dir, `lora-${arch}-${kind}.gguf`);
        const res = await convertLora(peft, base, out);
        assert.equal(res.alpha, kind === "plain" ? 16 : 0);
        const scale = 0.75;
        const model = await engine.loadModel(base, { loras: [{ path: out, scale }] });
        try {
          const moved = await checkActivations(
            model,
            (tokens) =>
            hfForward(ck, tokens, (hfName, w) => {
              const module = hfName.replace(/\.weight$/, "");
              const pair = ab.get(module);
              if (!pair) return w;
              const r = pair.a.shape[0]!;
              const alpha = module.endsWith("layers.1.mlp.down_proj") && cfg.alphaPattern ? 3 : cfg.alpha;
              const s = scale * (cfg.rslora ? alpha / Math.sqrt(r) : alpha / r);
              const [nOut, nIn] = [pair.b.shape[0]!, pair.a.shape[1]!];
              const out = Float32Array.from(w);
              for (let o = 0; o < nOut; o++) {
                for (let i = 0; i < nIn; i++) {
                  let d = 0;
                  for (let k = 0; k < r; k++) d += pair.b.data[o * r + k]! * pair.a.data[k * nIn + i]!;
                  out[o * nIn + i] = out[o * nIn + i]! + s * d;
                }
              }
              return out;
            }),
            (tokens) => hfForward(ck, tokens),
          );
          assert.ok(moved > 1e-2, `the adapter moved activations by only ${moved}`);
        } finally {
          await model.dispose();
        }
      }
    });
  }

  test("an adapter for another model is refused before llama.cpp sees it", async () => {
    const small = await writeTinyCheckpoint(path.join(dir, "other"), "qwen2", { nEmbd: 32, nHead: 2, nHeadKv: 1, seed: 4 });
    const smallGguf = path.join(dir, "other.gguf");
    await convertHf(small.dir, smallGguf, { type: "f32" });
    const big = await writeTinyCheckpoint(path.join(dir, "big"), "qwen2", { seed: 6 });
    const peft = path.join(dir, "peft-big");
    await writePeftAdapter(peft, big, { "model.layers.0.self_attn.q_proj": 2 }, { alpha: 4 });
    await assert.rejects(convertLora(peft, smallGguf, path.join(dir, "bad.gguf")), personaError("E_SHAPE", /wrong base model/));
    const bigGguf = path.join(dir, "big.gguf");
    await convertHf(big.dir, bigGguf, { type: "f32" });
    const adapter = path.join(dir, "big-lora.gguf");
    await convertLora(peft, bigGguf, adapter);
    await assert.rejects(engine.loadModel(smallGguf, { loras: [{ path: adapter }] }), personaError("E_SHAPE", /wrong base model/));
    await assert.rejects(engine.loadModel(smallGguf, { loras: [{ path: smallGguf }] }), personaError("E_BAD_MODEL", /not a LoRA adapter/));
  });
});

describe("convert and --lora on the command line", () => {
  test("convert hf → convert lora → activations with --lora FILE:SCALE differ from without, as the library's", async () => {
    const cli = async (...args: string[]) => {
      const r = await runCli(args);
      assert.equal(r.code, 0, r.stderr);
      return r;
    };
    const ck = await writeTinyCheckpoint(path.join(dir, "cli-hf"), "qwen2", { seed: 21 });
    const base = path.join(dir, "cli.gguf");
    const conv = JSON.parse((await cli("convert", "hf", ck.dir, "--out", base, "--type", "f32", "--json")).stdout) as { arch: string; tensors: number };
    assert.equal(conv.arch, "qwen2");
    const peft = path.join(dir, "cli-peft");
    await writePeftAdapter(peft, ck, { "model.layers.1.mlp.down_proj": 4 }, { alpha: 8 });
    const adapter = path.join(dir, "cli-lora.gguf");
    const lora = JSON.parse((await cli("convert", "lora", peft, "--base", base, "--out", adapter, "--json")).stdout) as { modules: { name: string; rank: number }[] };
    assert.deepEqual(lora.modules.map((m) => [m.name, m.rank]), [["blk.1.ffn_down.weight", 4]]);
    const refused = await runCli(["convert", "lora", peft, "--base", base, "--out", adapter]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /exists; pass --force/);

    const input = path.join(dir, "pairs.jsonl");
    await writeFile(input, `${JSON.stringify({ prompt: "hello there", response: " general kenobi" })}\n`);
    const acts = async (...extra: string[]) => {
      const out = path.join(dir, `acts-${extra.length}.safetensors`);
      await cli("activations", "--model", base, "-i", input, "-o", out, ...extra);
      return (await readSafetensors(out)).tensors.get("response_avg")!.data;
    };
    const [plain, adapted] = [await acts(), await acts("--lora", `${adapter}:0.5`)];
    const nEmbd = 64;
    // Layers up to the adapted block's input are unchanged, its output moves.
    assert.deepEqual(plain.subarray(0, 2 * nEmbd), adapted.subarray(0, 2 * nEmbd));
    assert.notDeepEqual(plain.subarray(2 * nEmbd), adapted.subarray(2 * nEmbd));
    const model = await engine.loadModel(base, { loras: [{ path: adapter, scale: 0.5 }] });
    try {
      const tokens = await model.tokenize("hello there general kenobi");
      const promptLength = (await model.tokenize("hello there")).length;
      const [lib] = await model.capture([{ tokens, promptLength }]);
      assert.ok(relErr(adapted, Float64Array.from(lib!.responseAvg)) < 1e-5);
    } finally {
      await model.dispose();
    }
  });
});
