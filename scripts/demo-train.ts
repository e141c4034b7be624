/**
 * Rebuilds the demo model from its seed and prints the loss curve:
 *   npm run demo:train [-- --out models/persona-demo.gguf --threads 2 --conversations N --lrs 5e-4,2.5e-4
 *     --layers 8 --embd 160 --ff 448]
 * Deterministic for a given thread count (the committed model used the defaults below).
 */
import { parseArgs } from "node:util";
import { DEMO_BUILD, buildDemoModel } from "../src/demo/build.js";
import { DEMO_MODEL_PATH } from "../src/demo/model.js";
import { Engine } from "../src/engine/Engine.js";

const { values } = parseArgs({
  options: {
    out: { type: "string", default: DEMO_MODEL_PATH },
    threads: { type: "string", default: "2" },
    conversations: { type: "string" },
    lrs: { type: "string" },
    window: { type: "string" },
    warmup: { type: "string" },
    "emb-std": { type: "string" },
    "from-epoch": { type: "string" },
    layers: { type: "string" },
    embd: { type: "string" },
    ff: { type: "string" },
  },
});
const config = {
  ...DEMO_BUILD,
  ...(values.conversations ? { conversations: Number(values.conversations) } : {}),
  ...(values.lrs ? { learningRates: values.lrs.split(",").map(Number) } : {}),
  ...(values.window ? { window: Number(values.window) } : {}),
  ...(values.warmup ? { warmupSteps: Number(values.warmup) } : {}),
  ...(values["emb-std"] ? { embeddingStd: Number(values["emb-std"]) } : {}),
  model: {
    ...DEMO_BUILD.model,
    ...(values.layers ? { nLayer: Number(values.layers) } : {}),
    ...(values.embd ? { nEmbd: Number(values.embd) } : {}),
    ...(values.ff ? { nFf: Number(values.ff) } : {}),
  },
};
console.log(`demo build: ${JSON.stringify(config)}`);
await using engine = await Engine.create({ gpu: "cpu", threads: Number(values.threads) });
let lastPrint = 0;
const result = await buildDemoModel({
  engine,
  out: values.out,
  config,
  onLog: (l) => console.log(l),
  fromEpoch: values["from-epoch"] ? Number(values["from-epoch"]) : 0,
  onProgress: (p) => {
    if (p.epochDone) {
      console.log(`epoch ${p.epoch}/${p.epochs}  train loss ${p.loss.toFixed(4)}  val loss ${p.valLoss?.toFixed(4) ?? "-"}`);
    } else if (p.step - lastPrint >= 25 || p.step < lastPrint) {
      lastPrint = p.step;
      const eta = ((p.steps - p.step) * config.window * config.batchWindows) / p.tokensPerSecond;
      console.log(`epoch ${p.epoch}/${p.epochs} step ${String(p.step).padStart(6)}/${p.steps}  loss ${p.loss.toFixed(4)}  lr ${p.learningRate.toExponential(2)}  ${p.tokensPerSecond.toFixed(0)} tok/s  epoch eta ${(eta / 60).toFixed(1)} min`);
    }
  },
});
console.log(`\nloss per epoch: ${result.losses.map((l) => l.toFixed(4)).join(" → ")}`);
console.log(`val loss per epoch: ${result.valLosses.map((l) => l.toFixed(4)).join(" → ")}`);
console.log(`${result.windows} windows, ${result.tokens} tokens in ${(result.seconds / 60).toFixed(1)} min (${(result.tokens / result.seconds).toFixed(0)} tok/s); wrote ${result.path}`);
