/**
 * GGUF LoRA adapters, as `persona generate --lora FILE[:SCALE]` applies them to the tiny model:
 * an adapter for its attention and FFN weights written by the project's GGUF writer, then edited
 * like the model files (adapter keys, alpha, tensor names, ranks and shapes, unpaired tensors,
 * raw header fields) and loaded with an odd scale now and then.
 */
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { GgufValueType } from "../../../src/engine/gguf/types.js";
import { nastyString } from "../mutate.js";
import type { FuzzCase, RunEnv, Target } from "../target.js";
import { type GgufSpec, TINY_MODEL, makeGgufCase, mutateTensors, mutateKv, tinyModelSpec, writeSpec } from "./gguf.js";

interface LoraSeed {
  model: Uint8Array;
  adapter: GgufSpec;
}

const RANK = 4;
const TARGETS = ["blk.0.attn_q.weight", "blk.0.attn_v.weight", "blk.0.ffn_up.weight"];

/** A valid rank-4 adapter for the tiny model's attn_q, attn_v and ffn_up. */
export function loraAdapterSpec(): GgufSpec {
  const d = TINY_MODEL.nEmbd;
  const outOf = (name: string) => (name.includes("ffn_up") ? TINY_MODEL.nFf : d);
  const t = (name: string, ne: number[]) => ({ name, ne, data: Float32Array.from({ length: ne[0]! * ne[1]! }, (_, i) => Math.sin(i) * 0.01), f16: false });
  return {
    kv: [
      { key: "general.architecture", type: GgufValueType.STRING, value: "llama" },
      { key: "general.type", type: GgufValueType.STRING, value: "adapter" },
      { key: "adapter.type", type: GgufValueType.STRING, value: "lora" },
      { key: "adapter.lora.alpha", type: GgufValueType.FLOAT32, value: 8 },
    ],
    tensors: TARGETS.flatMap((n) => [t(`${n}.lora_a`, [d, RANK]), t(`${n}.lora_b`, [RANK, outOf(n)])]),
    alignment: 32,
  };
}

function edit(rng: Rng, s: GgufSpec): string {
  switch (rng.int(5)) {
    case 0: {
      const key = rng.pick(["general.type", "adapter.type", "general.architecture", "adapter.lora.alpha", "adapter.alora.invocation_tokens"]);
      return mutateKv(rng, s, key, rng.chance(0.3) ? "remove" : "retype");
    }
    case 1: {
      const t = rng.pick(s.tensors);
      t.name = rng.pick([t.name.replace("lora_a", "lora_b"), t.name.replace("blk.0", "blk.1"), "token_embd.weight.lora_a", "output_norm.weight", `${t.name}.x`, "blk.0.attn_k.weight.lora_a"]);
      if (s.tensors.filter((u) => u.name === t.name).length > 1) t.name += "_dup";
      return `tensor renamed ${t.name}`;
    }
    case 2: {
      // A rank that differs between A and B, or a B for another width.
      const t = rng.pick(s.tensors);
      const ne = [...t.ne];
      ne[rng.int(2)] = rng.pick([0, 1, RANK + 1, 2 * RANK, 64, TINY_MODEL.nEmbd + 1]);
      s.tensors[s.tensors.indexOf(t)] = { ...t, ne, data: new Float32Array(ne[0]! * ne[1]!) };
      return `${t.name} shape [${ne.join(", ")}]`;
    }
    case 3:
      return mutateTensors(rng, s);
    default: {
      const t = rng.pick(s.tensors);
      t.data.fill(rng.pick([NaN, Infinity, 1e30, -1e30]));
      return `${t.name} filled with non-finite/huge values`;
    }
  }
}

export const loraTarget: Target<LoraSeed> = {
  name: "lora",
  description: "GGUF LoRA adapters: adapter keys, alpha, tensor names, ranks, shapes, header fields, scales (generate --lora)",
  async setup() {
    return { model: await writeSpec(await tinyModelSpec()), adapter: loraAdapterSpec() };
  },
  async make(rng, seed): Promise<FuzzCase> {
    const c = await makeGgufCase(rng, seed.adapter, edit);
    const scale = rng.chance(0.7) ? "1" : rng.pick(["0", "-1", "1e30", "-1e30", "1e-30", "3.4e38", "NaN", "inf", nastyString(rng)]);
    return {
      files: { "model.gguf": seed.model, "lora.gguf": c.bytes },
      commands: [["generate", "--model", "model.gguf", "-p", "Hi", "--max-tokens", "3", "-t", "0", "--lora", `lora.gguf:${scale}`]],
      note: `scale ${JSON.stringify(scale)}; ${c.note}`,
      input: Number(scale),
    };
  },
  async run(c, env: RunEnv) {
    const engine = await env.engine();
    const model = await engine.loadModel("model.gguf", { loras: [{ path: "lora.gguf", scale: c.input as number }] });
    try {
      const prompt = await model.encodeChat([{ role: "user", content: "Hi" }]);
      await model.generate([{ prompt }], { maxTokens: 3, temperature: 0 });
    } finally {
      await model.dispose();
    }
  },
};
