/**
 * Training throughput (tokens/s) of model.train on random-weight llama models, to size the demo
 * model: a ~0.9M-parameter one and a ~4M one (the demo's shape), windows of 128 and 256 tokens,
 * 1 and 2 threads. Token ids are random (throughput does not depend on content).
 *   node --import tsx bench/train.bench.ts [--steps 12] [--threads 1,2]
 */
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/Engine.js";
import { randomModelParamCount, writeSyntheticModel, type SyntheticModelConfig } from "../src/engine/gguf/synthetic.js";
import { chatmlTokenizer } from "../src/engine/gguf/tokenizer-meta.js";

const { values } = parseArgs({ options: { steps: { type: "string", default: "12" }, threads: { type: "string", default: "1,2" } } });
const steps = Number(values.steps);
const threadCounts = values.threads.split(",").map(Number);

/** ~1.6k tokens: bytes, then every lowercase pair, capital + lowercase, and space + letter. */
function bigVocab() {
  const lower = "abcdefghijklmnopqrstuvwxyz".split("");
  const upper = lower.map((c) => c.toUpperCase());
  const merges = [...lower.flatMap((a) => lower.map((b) => `${a} ${b}`)), ...upper.flatMap((a) => lower.map((b) => `${a} ${b}`))];
  merges.push(...[...lower, ...upper].map((c) => `Ġ ${c}`));
  return chatmlTokenizer(merges);
}

const MODELS: { label: string; cfg: SyntheticModelConfig }[] = [
  { label: "small", cfg: { arch: "llama", nLayer: 4, nEmbd: 128, nHead: 4, nHeadKv: 4, nFf: 344, contextLength: 512, seed: 1 } },
  { label: "demo-shape", cfg: { arch: "llama", nLayer: 4, nEmbd: 256, nHead: 4, nHeadKv: 4, nFf: 688, contextLength: 512, seed: 1 } },
  {
    label: "demo-shape, 1.6k vocab",
    cfg: { arch: "llama", nLayer: 4, nEmbd: 256, nHead: 4, nHeadKv: 4, nFf: 688, contextLength: 512, seed: 1, tokenizer: bigVocab() },
  },
];

const dir = await mkdtemp(path.join(tmpdir(), "persona-train-bench-"));
try {
  for (const threads of threadCounts) {
    const engine = await Engine.create({ gpu: "cpu", threads });
    for (const { label, cfg } of MODELS) {
      const file = path.join(dir, `${label.replace(/\W+/g, "-")}.gguf`);
      await writeSyntheticModel(file, cfg);
      const model = await engine.loadModel(file, { noMmap: true });
      for (const W of [128, 256]) {
        let s = 12345;
        const tokens = Int32Array.from({ length: steps * W + 1 }, () => {
          s = (Math.imul(s, 1103515245) + 12345) >>> 0;
          return s % model.info.nVocab;
        });
        const r = await model.train({ tokens, contextLength: W, epochs: 1, learningRate: 1e-4 });
        const params = randomModelParamCount(cfg);
        console.log(
          `${label.padEnd(24)} params ${(params / 1e6).toFixed(2)}M (trainable ${(r.trainableParams / 1e6).toFixed(2)}M) vocab ${model.info.nVocab}` +
            ` window ${W} threads ${threads}: ${r.tokensPerSecond.toFixed(0)} tok/s, ${((r.seconds / r.steps) * 1000).toFixed(0)} ms/step` +
            ` (load avg ${loadavg()[0]!.toFixed(1)})`,
        );
      }
      await model.dispose();
    }
    await engine.dispose();
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
