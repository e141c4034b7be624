/**
 * Screening throughput on the demo model, from one run: samples/s of `screenDataset` with base
 * replies (full ΔP) and without (--cheap), for three traits sharing one forward; and the cost of
 * projection capture during generation: the same seeded replies generated plainly and with the
 * three probes.
 *   node --import tsx bench/screen.bench.ts [--samples 96] [--threads 2] [--max-tokens 64]
 */
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { writeDemoDatasets } from "../src/demo/datasets.js";
import { DEMO_MODEL_PATH } from "../src/demo/model.js";
import { DEMO_TRAITS } from "../src/demo/traits.js";
import { Engine } from "../src/engine/Engine.js";
import { requestSeed } from "../src/engine/Model.js";
import { readDataset } from "../src/pipeline/dataset.js";
import { screenDataset, type ScreenTrait } from "../src/pipeline/screen.js";
import { row } from "../src/vectors/format.js";
import { loadVectorSource } from "../src/vectors/steer.js";

const { values } = parseArgs({
  options: { samples: { type: "string", default: "96" }, threads: { type: "string", default: "2" }, "max-tokens": { type: "string", default: "64" } },
});
const n = Number(values.samples);
const maxTokens = Number(values["max-tokens"]);

const dir = await mkdtemp(path.join(tmpdir(), "persona-screen-bench-"));
const engine = await Engine.create({ gpu: "cpu", threads: Number(values.threads) });
try {
  const model = await engine.loadModel(DEMO_MODEL_PATH);
  const [file] = await writeDemoDatasets({ out: dir, traits: ["evil"], rows: n, mixed: [10] }).then((f) => f.filter((x) => x.name === "mixed-10"));
  const traits: ScreenTrait[] = [];
  for (const t of DEMO_TRAITS) {
    const v = await loadVectorSource(t, model.info);
    const layer = v.meta.bestLayer ?? model.info.nLayer;
    traits.push({ name: t, layer, vector: Float32Array.from(row(v.matrix, layer)) });
  }
  const time = async (fn: () => Promise<unknown>) => {
    const t0 = performance.now();
    await fn();
    return (performance.now() - t0) / 1000;
  };
  // Warm-up: contexts and page cache.
  await screenDataset(model, { data: file!.path, traits, runDir: path.join(dir, "warm"), cheap: true });
  const full = await time(() => screenDataset(model, { data: file!.path, traits, runDir: path.join(dir, "full"), maxTokens }));
  const cheap = await time(() => screenDataset(model, { data: file!.path, traits, runDir: path.join(dir, "cheap"), cheap: true }));

  const prompts: Int32Array[] = [];
  for await (const r of readDataset(file!.path)) prompts.push(await model.encodeChat(r.sample!.prompt));
  const requests = prompts.map((prompt, i) => ({ prompt, seed: requestSeed(0, i) }));
  const probes = model.probes(traits.map((t) => ({ layer: t.layer, vector: t.vector })));
  const common = { temperature: 1, maxTokens, exact: true };
  let tokens = 0;
  const plain = await time(async () => (tokens = (await model.generate(requests, common)).reduce((a, r) => a + r.tokens.length, 0)));
  const projected = await time(() => model.generate(requests, { ...common, probes }));

  console.log(`demo model (${model.info.nLayer} layers × ${model.info.nEmbd}), ${n} samples of evil/mixed-10, 3 traits, threads ${values.threads}, load avg ${loadavg()[0]!.toFixed(1)}`);
  console.log(`screen, full ΔP (base replies ≤ ${maxTokens} tokens): ${(n / full).toFixed(1)} samples/s (${full.toFixed(1)} s)`);
  console.log(`screen, --cheap (no base replies):        ${(n / cheap).toFixed(1)} samples/s (${cheap.toFixed(1)} s)`);
  console.log(`  cheap is ${(full / cheap).toFixed(1)}× faster`);
  console.log(`generation of the same ${n} seeded replies (${tokens} tokens): plain ${plain.toFixed(2)} s, with 3 probes ${projected.toFixed(2)} s`);
  console.log(`  projection capture costs ${(((projected - plain) / plain) * 100).toFixed(1)}% over plain generation`);
} finally {
  await engine.dispose();
  await rm(dir, { recursive: true, force: true });
}
