/**
 * Engine benchmark: batched generation tokens/s, plain, with residual capture and with steering,
 * against node-llama-cpp's own API on the same model, binaries and thread count, in one run.
 * Writes a ≥50M-parameter random-weight model once (cached in .cache/bench). Every sequence
 * generates exactly the same number of tokens in both engines (end-of-generation is ignored), so
 * the workloads match token for token.
 *
 *   npm run bench:engine [-- --parallel 8 --tokens 64 --repeats 3 --threads 2 --only batch|load|loop]
 *
 * The "load" part decodes one sequence on an idle machine and next to a competing CPU-bound
 * process (one per core, started and stopped here), for 1 thread and all cores and for several
 * threadpool polling levels, so the default's degradation under load is visible in one run.
 *
 * The "loop" part (bench/loop-case.ts) compares the decode loop (continuous batching) with the
 * batch API on the same requests from concurrent callers.
 *
 * node-llama-cpp is installed on first use into bench/.peer (it is not a project dependency) and
 * measured in a child process (bench/peer.ts).
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_POLL, Engine } from "../src/engine/Engine.js";
import { randomModelParamCount, writeSyntheticModel, type SyntheticModelConfig } from "../src/engine/gguf/synthetic.js";
import { benchLoopCase, type CaseTime } from "./loop-case.js";

const { values: args } = parseArgs({
  options: {
    parallel: { type: "string", default: "1,8" },
    tokens: { type: "string", default: "64" },
    repeats: { type: "string", default: "3" },
    threads: { type: "string", default: String(availableParallelism()) },
    only: { type: "string" },
    polls: { type: "string", default: "0,50,100" },
  },
});
const PARALLEL = args.parallel.split(",").map(Number);
const TOKENS = Number(args.tokens);
const REPEATS = Number(args.repeats);
const THREADS = Number(args.threads);

const MODEL_CFG: SyntheticModelConfig = {
  arch: "llama",
  nLayer: 11,
  nEmbd: 640,
  nHead: 10,
  nHeadKv: 5,
  nFf: 1792,
  contextLength: 2048,
  seed: 1,
  type: "f16",
  name: "bench-llama-52m",
};

const cacheDir = path.resolve(".cache/bench");
const modelPath = path.join(cacheDir, "bench-llama-52m-f16.gguf");
const PROMPT = "The quick brown fox jumps over the lazy dog while the cat watches from the window.";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function timeIt(fn: () => Promise<void>): Promise<number> {
  await fn(); // warm-up: context creation, first graph
  const times: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const t0 = performance.now();
    await fn();
    times.push((performance.now() - t0) / 1000);
  }
  return median(times);
}

interface OursTimes {
  plain: number;
  capture: number;
  captureOne: number;
  steer: number;
}

async function benchOurs(parallel: number): Promise<OursTimes> {
  await using engine = await Engine.create({ gpu: "cpu", threads: THREADS });
  const model = await engine.loadModel(modelPath);
  const prompt = await model.tokenize(PROMPT);
  const requests = Array.from({ length: parallel }, () => ({ prompt }));
  const base = { temperature: 0, maxTokens: TOKENS, minTokens: TOKENS, parallel };
  const mid = Math.floor(model.info.nLayer / 2);
  const vector = Float32Array.from({ length: model.info.nEmbd }, (_, i) => Math.sin(i));
  const steering = model.steering([{ vector, layer: mid, coef: 0.5 }]);
  const check = (rs: { tokens: Int32Array }[]) => {
    if (rs.some((r) => r.tokens.length !== TOKENS)) throw new Error("a sequence did not generate the full token count");
  };
  return {
    plain: await timeIt(async () => check(await model.generate(requests, base))),
    capture: await timeIt(async () => check(await model.generate(requests, { ...base, capture: true }))),
    captureOne: await timeIt(async () => check(await model.generate(requests, { ...base, capture: true, captureLayers: [mid] }))),
    steer: await timeIt(async () => check(await model.generate(requests, { ...base, steering }))),
  };
}

/** The peer runs in its own process, so the llama.cpp copy our engine loaded cannot affect it. */
function benchPeer(parallel: number): number {
  const out = execFileSync(
    process.execPath,
    ["--import", "tsx", "bench/peer.ts", modelPath, String(parallel), String(TOKENS), String(REPEATS), String(THREADS), PROMPT],
    { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  );
  return (JSON.parse(out.trim().split("\n").pop()!) as { seconds: number }).seconds;
}

/** Single-sequence plain generation at one thread count and polling level. */
async function benchLoadCase(threads: number, poll: number): Promise<number> {
  await using engine = await Engine.create({ gpu: "cpu", threads, poll });
  const model = await engine.loadModel(modelPath);
  const requests = [{ prompt: await model.tokenize(PROMPT) }];
  return await timeIt(async () => void (await model.generate(requests, { temperature: 0, maxTokens: TOKENS, minTokens: TOKENS })));
}

/** Runs `fn` while one CPU-bound process per core competes for the machine. */
async function busy<T>(fn: () => Promise<T>): Promise<T> {
  const hogs = Array.from({ length: availableParallelism() }, () => spawn(process.execPath, ["-e", "for (;;);"], { stdio: "ignore" }));
  try {
    return await fn();
  } finally {
    for (const h of hogs) h.kill();
  }
}

async function benchLoad(): Promise<void> {
  const cores = availableParallelism();
  const polls = args.polls.split(",").map(Number);
  const threadCounts = [...new Set([1, cores])];
  console.log(`\nunder load: 1 sequence, ${TOKENS} tokens, tok/s idle vs next to ${cores} CPU-bound process(es); default poll ${DEFAULT_POLL}`);
  console.log(`  load average before: ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  for (const threads of threadCounts) {
    for (const poll of polls) {
      const idle = await benchLoadCase(threads, poll);
      const loaded = await busy(() => benchLoadCase(threads, poll));
      const tps = (t: number) => (TOKENS / t).toFixed(1).padStart(8);
      console.log(`  threads ${threads} poll ${String(poll).padStart(3)}   idle ${tps(idle)}   busy ${tps(loaded)}   busy/idle ${(idle / loaded).toFixed(2)}×`);
    }
  }
  console.log(`  load average after: ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
}

async function main(): Promise<void> {
  if (!existsSync(modelPath)) {
    mkdirSync(cacheDir, { recursive: true });
    console.error(`writing ${randomModelParamCount(MODEL_CFG) / 1e6}M-parameter benchmark model to ${modelPath} ...`);
    await writeSyntheticModel(modelPath, MODEL_CFG);
  }
  console.log(
    `model: ${(randomModelParamCount(MODEL_CFG) / 1e6).toFixed(1)}M params (llama, F16, ${MODEL_CFG.nLayer} layers), ${TOKENS} new tokens per sequence, ${THREADS} threads, median of ${REPEATS}`,
  );
  if (args.only === "load") return benchLoad();
  if (args.only === "loop") return benchLoop();
  for (const parallel of PARALLEL) {
    const total = parallel * TOKENS;
    const ours = await benchOurs(parallel);
    const peer = benchPeer(parallel);
    const tps = (t: number) => (total / t).toFixed(1).padStart(8);
    const pct = (t: number) => `${((t / ours.plain - 1) * 100).toFixed(1)}%`;
    console.log(`\n${parallel} sequence(s) decoded together`);
    console.log(`  persona-vectors                 ${tps(ours.plain)} tok/s`);
    console.log(`  + capture, all ${MODEL_CFG.nLayer + 1} layers       ${tps(ours.capture)} tok/s   overhead ${pct(ours.capture)} (goal ≤ 5%)`);
    console.log(`  + capture, one layer            ${tps(ours.captureOne)} tok/s   overhead ${pct(ours.captureOne)}`);
    console.log(`  + steering, one vector          ${tps(ours.steer)} tok/s   overhead ${pct(ours.steer)}`);
    console.log(`  node-llama-cpp 3.21.1 (peer)    ${tps(peer)} tok/s`);
    console.log(`  throughput vs peer: ${(peer / ours.plain).toFixed(2)}×   (goal ≥ 0.95×)`);
  }
  if (args.only === undefined) {
    await benchLoop();
    await benchLoad();
  }
}

async function benchLoop(): Promise<void> {
  console.log(`\ndecode loop vs batch API, same requests; tok/s by wall clock and by process CPU time; load average ${loadavg()[0]!.toFixed(2)}`);
  for (const callers of PARALLEL) {
    const t = await benchLoopCase({ modelPath, threads: THREADS, callers, tokens: TOKENS, prompt: PROMPT, repeats: REPEATS });
    const row = (label: string, x: CaseTime, vs?: CaseTime) => {
      const tps = (s: number) => ((callers * TOKENS) / s).toFixed(1).padStart(8);
      const ratio = vs ? `   cpu ${(x.cpu / vs.cpu).toFixed(2)}× of one batched call` : "";
      console.log(`  ${label.padEnd(40)} ${tps(x.wall)} tok/s  ${tps(x.cpu)} tok/cpu-s${ratio}`);
    };
    console.log(`${callers} concurrent caller(s), one request each`);
    row("separate model.generate calls", t.separateCalls, t.oneCall);
    row("one batched model.generate call", t.oneCall);
    row("one loop, fresh (nothing to reuse)", t.freshLoop, t.oneCall);
    row("one loop, prompt prefix reused", t.loop, t.oneCall);
    row("loop + per-token projection streamed", t.loopProbe, t.oneCall);
  }
}

await main();
