/**
 * Training throughput (tokens/s) and memory of model.train on random-weight llama models: a
 * ~0.9M-parameter one, the demo's shape (~4M), and a ~52M one; full-weight training next to a
 * rank-8 LoRA on all seven targets, with LoRA's tokens/s as a ratio of full training's measured
 * in the same run. Windows of 128 and 256 tokens, 1 and 2 threads. Token ids are random
 * (throughput does not depend on content). Memory is the process's peak resident set during the
 * run (sampled at every step, while the optimiser's buffers are live).
 *   node --import tsx bench/train.bench.ts [--steps 12] [--threads 1,2] [--models small,demo-shape,52M] [--windows 128,256]
 */
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/Engine.js";
import { randomModelParamCount, writeSyntheticModel, type SyntheticModelConfig } from "../src/engine/gguf/synthetic.js";
import { chatmlTokenizer } from "../src/engine/gguf/tokenizer-meta.js";

const { values } = parseArgs({
  options: {
    steps: { type: "string", default: "12" },
    threads: { type: "string", default: "1,2" },
    models: { type: "string", default: "small,demo-shape,demo-shape-1.6k-vocab,52M" },
    windows: { type: "string", default: "128,256" },
  },
});
const steps = Number(values.steps);
const threadCounts = values.threads.split(",").map(Number);
const windows = values.windows.split(",").map(Number);
const picked = new Set(values.models.split(","));

/** ~1.6k tokens: bytes, then every lowercase pair, capital + lowercase, and space + letter. */
function bigVocab() {
  const lower = "abcdefghijklmnopqrstuvwxyz".split("");
  const upper = lower.map((c) => c.toUpperCase());
  const merges = [...lower.flatMap((a) => lower.map((b) => `${a} ${b}`)), ...upper.flatMap((a) => lower.map((b) => `${a} ${b}`))];
  merges.push(...[...lower, ...upper].map((c) => `Ġ ${c}`));
  return chatmlTokenizer(merges);
}

const ALL_MODELS: { label: string; cfg: SyntheticModelConfig }[] = [
  { label: "small", cfg: { arch: "llama", nLayer: 4, nEmbd: 128, nHead: 4, nHeadKv: 4, nFf: 344, contextLength: 512, seed: 1 } },
  { label: "demo-shape", cfg: { arch: "llama", nLayer: 4, nEmbd: 256, nHead: 4, nHeadKv: 4, nFf: 688, contextLength: 512, seed: 1 } },
  {
    label: "demo-shape-1.6k-vocab",
    cfg: { arch: "llama", nLayer: 4, nEmbd: 256, nHead: 4, nHeadKv: 4, nFf: 688, contextLength: 512, seed: 1, tokenizer: bigVocab() },
  },
  { label: "52M", cfg: { arch: "llama", nLayer: 10, nEmbd: 640, nHead: 10, nHeadKv: 10, nFf: 1792, contextLength: 512, seed: 1, tokenizer: bigVocab() } },
];
const MODELS = ALL_MODELS.filter((m) => picked.has(m.label));
const MODES = [{ mode: "full" }, { mode: "lora r8", lora: { rank: 8 } }] as const;
const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;

const dir = await mkdtemp(path.join(tmpdir(), "persona-train-bench-"));
try {
  for (const threads of threadCounts) {
    const engine = await Engine.create({ gpu: "cpu", threads });
    for (const { label, cfg } of MODELS) {
      const file = path.join(dir, `${label.replace(/\W+/g, "-")}.gguf`);
      await writeSyntheticModel(file, cfg);
      const model = await engine.loadModel(file, { noMmap: true });
      for (const W of windows) {
        let s = 12345;
        const tokens = Int32Array.from({ length: steps * W + 1 }, () => {
          s = (Math.imul(s, 1103515245) + 12345) >>> 0;
          return s % model.info.nVocab;
        });
        let fullRate = 0;
        for (const m of MODES) {
          let peak = 0;
          const sample = () => void (peak = Math.max(peak, process.memoryUsage().rss));
          const r = await model.train({ tokens, contextLength: W, epochs: 1, learningRate: 1e-4, onProgress: sample, ...("lora" in m ? { lora: m.lora } : {}) });
          if (m.mode === "full") fullRate = r.tokensPerSecond;
          const params = randomModelParamCount(cfg);
          console.log(
            `${label.padEnd(22)} ${m.mode.padEnd(8)} params ${(params / 1e6).toFixed(2)}M (trainable ${(r.trainableParams / 1e6).toFixed(2)}M) vocab ${model.info.nVocab}` +
              ` window ${W} threads ${threads}: ${r.tokensPerSecond.toFixed(0)} tok/s, ${((r.seconds / r.steps) * 1000).toFixed(0)} ms/step` +
              `${m.mode === "full" ? "" : `, ${(r.tokensPerSecond / fullRate).toFixed(2)}× full`}, peak RSS ${mib(peak)} (load avg ${loadavg()[0]!.toFixed(1)})`,
          );
        }
      }
      await model.dispose();
    }
    await engine.dispose();
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
