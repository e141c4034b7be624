/**
 * Screening throughput on the demo model, from one run: samples/s of `screenDataset` with base
 * replies (full ΔP) and without (--cheap), for three traits sharing one forward; and the cost of
 * projection capture during generation: the same seeded replies generated plainly and with the
 * three probes; and what shared prompt prefixes save, in prompt tokens decoded and process CPU time
 * (a busy machine disturbs it less than wall time), with sharing on and off in one run: a
 * screening chunk (each sample and its base reply decode the prompt once) and an evaluation
 * wave (5 rollouts of each of the evil trait's questions fork their question's prompt).
 *   node --import tsx bench/screen.bench.ts [--samples 96] [--threads 2] [--max-tokens 64]
 */
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { writeDemoDatasets } from "../src/demo/datasets.js";
import { DEMO_MODEL_PATH } from "../src/demo/model.js";
import { DEMO_TRAITS, loadDemoTrait } from "../src/demo/traits.js";
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

  // Shared prompt prefixes: the same work with sharing on and off.
  const sharing = async (label: string, run: (sharePrefixes: boolean) => Promise<unknown>) => {
    const measure = async (sharePrefixes: boolean) => {
      const before = await model.runStats();
      const c0 = process.cpuUsage();
      await run(sharePrefixes);
      const c = process.cpuUsage(c0);
      const after = await model.runStats();
      return { cpu: (c.user + c.system) / 1e6, prompt: after.promptTokensDecoded - before.promptTokensDecoded, forked: after.tokensForked - before.tokensForked };
    };
    const off = await measure(false);
    const on = await measure(true);
    console.log(`${label}: prompt tokens decoded ${off.prompt} → ${on.prompt} (${on.forked} forked, ${(on.prompt / off.prompt).toFixed(2)}×); CPU ${off.cpu.toFixed(2)} s → ${on.cpu.toFixed(2)} s (${(on.cpu / off.cpu).toFixed(2)}×)`);
  };
  const samples: { tokens: Int32Array; promptLength: number; seed: number }[] = [];
  for await (const r of readDataset(file!.path)) samples.push({ ...(await model.encodeConversation([...r.sample!.prompt, { role: "assistant", content: r.sample!.response }])), seed: samples.length });
  await sharing(`screening ${n} samples, each with a base reply (≤ ${maxTokens} tokens)`, (sharePrefixes) => model.projectAndReply(samples, probes, { ...common, sharePrefixes }));
  const questions = (await loadDemoTrait("evil", "eval")).questions;
  const wave: { prompt: Int32Array; seed: number }[] = [];
  for (const q of questions) {
    const prompt = await model.encodeChat([{ role: "user", content: q }]);
    for (let k = 0; k < 5; k++) wave.push({ prompt, seed: requestSeed(0, k) });
  }
  await sharing(`evaluation wave, ${questions.length} questions × 5 rollouts (≤ ${maxTokens} tokens, F16 KV)`, (sharePrefixes) =>
    model.generate(wave, { temperature: 1, maxTokens, sharePrefixes }),
  );
} finally {
  await engine.dispose();
  await rm(dir, { recursive: true, force: true });
}
