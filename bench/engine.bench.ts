/**
 * Engine benchmark: batched generation tokens/s, plain, with residual capture and with steering,
 * against llama.cpp's own `llama-batched-bench` (built once from the pinned release's source, see
 * bench/batched-bench.ts) and node-llama-cpp's API, on the same model, threads, prompt length and
 * token counts. Writes a ≥50M-parameter random-weight model once (cached in .cache/bench). Every
 * sequence generates exactly the same number of tokens (end-of-generation is ignored), so the
 * workloads match token for token.
 *
 *   npm run bench:engine [-- --parallel 1,8,32 --tokens 64 --repeats 3 --threads 2 --only batch|load|loop]
 *                        [--peers batched-bench,node-llama-cpp] [--model bench|demo|FILE.gguf]
 *
 * The machine may be shared: ours and llama-batched-bench run interleaved, repeat after repeat, and
 * the figures are medians; the load average is printed before and after. A step breakdown (native
 * decode, eval-callback traffic, sampling, JS bookkeeping; bench/breakdown.ts) attributes the gap.
 * Where `npm run build:llama` has built the CPU backend here, plain generation is measured on it
 * too (in a child process, bench/breakdown-child.ts), next to the prebuilt one.
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
import { existsSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_POLL, Engine } from "../src/engine/Engine.js";
import { EVAL_FILTER_LIBRARY } from "../src/engine/ffi/discover.js";
import { randomModelParamCount } from "../src/engine/gguf/synthetic.js";
import { LOCAL_CPU_BACKEND } from "../scripts/llama-source.js";
import { BENCH_MODEL_CFG, benchModelPath, ensureBenchModel } from "./bench-model.js";
import { ensureBatchedBench, runBatchedBench, type BatchedBenchResult } from "./batched-bench.js";
import { Breakdown, type Mode, type StepBreakdown } from "./breakdown.js";
import { benchLoopCase, type CaseTime } from "./loop-case.js";

const { values: args } = parseArgs({
  options: {
    parallel: { type: "string", default: "1,8,32" },
    tokens: { type: "string", default: "64" },
    repeats: { type: "string", default: "3" },
    threads: { type: "string", default: String(availableParallelism()) },
    only: { type: "string" },
    polls: { type: "string", default: "0,50,100" },
    /** Which peers to run: llama.cpp's llama-batched-bench and/or node-llama-cpp. */
    peers: { type: "string", default: "batched-bench,node-llama-cpp" },
    /** bench: the 52M random F16 model (written once); demo: models/persona-demo.gguf; or a GGUF path. */
    model: { type: "string", default: "bench" },
  },
});
const PARALLEL = args.parallel.split(",").map(Number);
const TOKENS = Number(args.tokens);
const REPEATS = Number(args.repeats);
const THREADS = Number(args.threads);
const PEERS = args.peers.split(",");
const MODEL = args.model === "bench" ? benchModelPath : args.model === "demo" ? path.resolve("models/persona-demo.gguf") : path.resolve(args.model);

// This process measures the prebuilt CPU backend (its in-process step breakdown loads it); the
// self-built one, the default once built, is measured in child processes.
process.env.PERSONA_CPU_BACKEND ||= "prebuilt";

const PROMPT = "The quick brown fox jumps over the lazy dog while the cat watches from the window.";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const load = () => loadavg().map((x) => x.toFixed(2)).join(" ");

async function seconds(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

async function timeIt(fn: () => Promise<void>): Promise<number> {
  await fn(); // warm-up: context creation, first graph
  const times: number[] = [];
  for (let i = 0; i < REPEATS; i++) times.push(await seconds(fn));
  return median(times);
}

const VARIANTS = ["plain", "capture", "captureOne", "steer"] as const;
type Variant = (typeof VARIANTS)[number];

/** Our engine as users get it (worker thread), one engine per sequence count so each keeps its context. */
async function oursRunner(parallel: number): Promise<{ run: (v: Variant) => Promise<number>; close: () => Promise<void> }> {
  const engine = await Engine.create({ gpu: "cpu", threads: THREADS });
  const model = await engine.loadModel(MODEL);
  const prompt = await model.tokenize(PROMPT);
  const requests = Array.from({ length: parallel }, () => ({ prompt }));
  const base = { temperature: 0, maxTokens: TOKENS, minTokens: TOKENS, parallel };
  const mid = Math.floor(model.info.nLayer / 2);
  const vector = Float32Array.from({ length: model.info.nEmbd }, (_, i) => Math.sin(i));
  const opts: Record<Variant, object> = {
    plain: base,
    capture: { ...base, capture: true },
    captureOne: { ...base, capture: true, captureLayers: [mid] },
    steer: { ...base, steering: model.steering([{ vector, layer: mid, coef: 0.5 }]) },
  };
  const run = (v: Variant) =>
    seconds(async () => {
      const rs = await model.generate(requests, opts[v]);
      if (rs.some((r) => r.tokens.length !== TOKENS)) throw new Error("a sequence did not generate the full token count");
    });
  for (const v of VARIANTS) await run(v); // warm-up: context creation, first graphs
  return { run, close: () => engine.dispose() };
}

/** The node-llama-cpp peer runs in its own process, so the llama.cpp copy our engine loaded cannot affect it. */
function benchNodeLlamaCpp(parallel: number): number {
  const out = execFileSync(
    process.execPath,
    ["--import", "tsx", "bench/peer.ts", MODEL, String(parallel), String(TOKENS), String(REPEATS), String(THREADS), PROMPT],
    { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  );
  return (JSON.parse(out.trim().split("\n").pop()!) as { seconds: number }).seconds;
}

/** Plain generation steps of our engine on the self-built CPU backend (npm run build:llama), in a child process. */
function localBreakdown(parallel: number): StepBreakdown {
  const out = execFileSync(
    process.execPath,
    ["--import", "tsx", "bench/breakdown-child.ts", MODEL, LOCAL_CPU_BACKEND, String(THREADS), String(DEFAULT_POLL), String(parallel), String(TOKENS), PROMPT],
    { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  );
  return JSON.parse(out.trim().split("\n").pop()!) as StepBreakdown;
}

function medianBreakdown(xs: StepBreakdown[]): StepBreakdown {
  const keys = Object.keys(xs[0]!) as (keyof StepBreakdown)[];
  return Object.fromEntries(keys.map((k) => [k, median(xs.map((x) => x[k]))])) as unknown as StepBreakdown;
}

async function benchBatch(): Promise<void> {
  const bb = PEERS.includes("batched-bench") ? ensureBatchedBench() : null;
  const local = existsSync(LOCAL_CPU_BACKEND);
  if (!local) console.log(`self-built CPU backend: not built (npm run build:llama makes ${LOCAL_CPU_BACKEND}); prebuilt only`);
  const filter = existsSync(EVAL_FILTER_LIBRARY) && process.env.PERSONA_NATIVE_HOOKS !== "0";
  if (!filter) console.log(`eval filter: not used (npm run build:hooks makes ${EVAL_FILTER_LIBRARY}); hooks in JS only`);
  const breakdown = await Breakdown.open(MODEL, THREADS, DEFAULT_POLL, { evalFilter: filter ? EVAL_FILTER_LIBRARY : undefined });
  // The same hooked steps with every graph node asked about in JS, for comparison.
  const jsHooks = filter ? await Breakdown.open(MODEL, THREADS, DEFAULT_POLL) : undefined;
  const hooked = ["captureOne", "ablate"] as const;
  const promptIds = breakdown.tokenize(PROMPT);
  const promptTokens = promptIds.length;
  console.log(`prompt: ${promptTokens} tokens; load average before: ${load()}`);
  const ours = new Map<number, Awaited<ReturnType<typeof oursRunner>>>();
  for (const p of PARALLEL) ours.set(p, await oursRunner(p));
  const times = new Map<number, Record<Variant, number[]>>(PARALLEL.map((p) => [p, { plain: [], capture: [], captureOne: [], steer: [] }]));
  const steps = new Map<number, Record<Mode, StepBreakdown[]>>(PARALLEL.map((p) => [p, { plain: [], callback: [], captureOne: [], steer: [], ablate: [] }]));
  const jsSteps = new Map<number, Record<(typeof hooked)[number], StepBreakdown[]>>(PARALLEL.map((p) => [p, { captureOne: [], ablate: [] }]));
  const peer = new Map<string, BatchedBenchResult[]>();
  const localSteps = new Map<number, StepBreakdown[]>(PARALLEL.map((p) => [p, []]));
  // Interleaved: every repeat runs each contender once, so a neighbour's burst hits all of them.
  for (let r = 0; r < REPEATS; r++) {
    for (const p of PARALLEL) {
      for (const v of VARIANTS) times.get(p)![v].push(await ours.get(p)!.run(v));
      for (const m of ["plain", "callback", "captureOne", "steer", "ablate"] as const) steps.get(p)![m].push(await breakdown.measure(m, promptIds, p, TOKENS));
      if (jsHooks) for (const m of hooked) jsSteps.get(p)![m].push(await jsHooks.measure(m, promptIds, p, TOKENS));
      if (local) localSteps.get(p)!.push(localBreakdown(p));
      if (!bb) continue;
      for (const unified of [false, true]) {
        const key = `${p} ${unified}`;
        peer.set(key, [...(peer.get(key) ?? []), runBatchedBench(bb, { model: MODEL, threads: THREADS, promptTokens, tokens: TOKENS, parallel: p, unified })]);
      }
    }
  }
  breakdown.close();
  jsHooks?.close();
  for (const o of ours.values()) await o.close();
  console.log(`load average after the interleaved runs: ${load()}`);

  for (const p of PARALLEL) {
    const total = p * TOKENS;
    const t = times.get(p)!;
    const plain = median(t.plain);
    const tps = (s: number) => (total / s).toFixed(1).padStart(8);
    const pct = (s: number) => `${((s / plain - 1) * 100).toFixed(1)}%`.padStart(6);
    const st = steps.get(p)!;
    const b = medianBreakdown(st.plain);
    const cb = medianBreakdown(st.callback);
    const c1 = medianBreakdown(st.captureOne);
    const sv = medianBreakdown(st.steer);
    console.log(`\n${p} sequence(s) decoded together, tok/s (median of ${REPEATS})`);
    const peerRow = (unified: boolean) => {
      const rows = peer.get(`${p} ${unified}`);
      if (!rows) return undefined;
      const cpu = rows.map((x) => x.cpuStepMs).filter((x) => x !== undefined);
      return { tg: median(rows.map((x) => x.speedTg)), step: median(rows.map((x) => (x.tTg / TOKENS) * 1000)), cpu: cpu.length > 0 ? median(cpu) : undefined };
    };
    const split = peerRow(false);
    const unified = peerRow(true);
    const ratio = (x: number, y: number | undefined) => (y === undefined ? "  n/a" : `${(x / y).toFixed(2)}×`);
    const cpu = (x: number | undefined) => (x === undefined ? "n/a" : `${x.toFixed(2)} ms CPU/step`);
    if (split) console.log(`  llama-batched-bench TG, per-sequence KV     ${split.tg.toFixed(1).padStart(8)}   (${split.step.toFixed(2)} ms/step, ${cpu(split.cpu)})`);
    if (unified) console.log(`  llama-batched-bench TG, unified KV (-kvu)  ${unified.tg.toFixed(1).padStart(8)}   (${unified.step.toFixed(2)} ms/step, ${cpu(unified.cpu)})`);
    console.log(`  persona-vectors, generation steps          ${b.genTokS.toFixed(1).padStart(8)}   (${b.step.toFixed(2)} ms/step, ${cpu(b.cpuStep)})`);
    console.log(`    ours vs batched-bench, wall time:  ${ratio(b.genTokS, split?.tg)} per-sequence KV, ${ratio(b.genTokS, unified?.tg)} unified   (goal ≥ 0.9×)`);
    const cpuRatio = (peerCpu: number | undefined) => (peerCpu === undefined ? "  n/a" : `${(peerCpu / b.cpuStep).toFixed(2)}×`);
    console.log(`    ours vs batched-bench, CPU time:   ${cpuRatio(split?.cpu)} per-sequence KV, ${cpuRatio(unified?.cpu)} unified`);
    if (local) {
      const l = medianBreakdown(localSteps.get(p)!);
      const lCpu = (peerCpu: number | undefined) => (peerCpu === undefined ? "  n/a" : `${(peerCpu / l.cpuStep).toFixed(2)}×`);
      console.log(`  same, self-built CPU backend (build:llama)  ${l.genTokS.toFixed(1).padStart(8)}   (${l.step.toFixed(2)} ms/step, ${cpu(l.cpuStep)}; llama_decode ${l.cpuDecode.toFixed(2)})`);
      console.log(`    ours vs batched-bench, wall time:  ${ratio(l.genTokS, split?.tg)} per-sequence KV, ${ratio(l.genTokS, unified?.tg)} unified   (goal ≥ 0.9×)`);
      console.log(`    ours vs batched-bench, CPU time:   ${lCpu(split?.cpu)} per-sequence KV, ${lCpu(unified?.cpu)} unified; ${(b.cpuStep / l.cpuStep).toFixed(2)}× the prebuilt's speed`);
    }
    console.log(`  persona-vectors, whole call (with prompt)  ${tps(plain)}`);
    console.log(`  + capture, all layers                      ${tps(median(t.capture))}   overhead ${pct(median(t.capture))}`);
    console.log(`  + capture, one layer                       ${tps(median(t.captureOne))}   overhead ${pct(median(t.captureOne))}   (goal ≤ 3%)`);
    console.log(`  + steering, one vector                     ${tps(median(t.steer))}   overhead ${pct(median(t.steer))}   (goal ≤ 3%)`);
    if (PEERS.includes("node-llama-cpp")) {
      const nl = benchNodeLlamaCpp(p);
      console.log(`  node-llama-cpp 3.21.1                      ${tps(nl)}   ours ${(nl / plain).toFixed(2)}× of it`);
    }
    const ms = (x: number) => x.toFixed(3).padStart(7);
    console.log(`  one generation step, ms:  ours ${ms(b.step)} = native decode ${ms(b.decode)} + sampling ${ms(b.sample)} + JS bookkeeping ${ms(b.js)}`);
    console.log(`    CPU ms: step ${ms(b.cpuStep)}, of which llama_decode ${ms(b.cpuDecode)}`);
    console.log(`    eval callback when installed: +${ms(cb.decode - b.decode)} ms (${cb.callbacks.toFixed(0)} JS calls/step; plain steps now make ${b.callbacks.toFixed(0)})`);
    // Each repeat's step against the same repeat's plain step, then the median: a neighbour's burst
    // moves both of a pair.
    const cpuPct = (xs: StepBreakdown[]) => `${((median(xs.map((x, i) => x.cpuStep / st.plain[i]!.cpuStep)) - 1) * 100).toFixed(1)}%`;
    console.log(`    capture of one layer: step ${ms(c1.step)} ms, CPU ${cpuPct(st.captureOne)} over plain (${c1.callbacks.toFixed(0)} JS calls/step)   (goal ≤ 3%)`);
    console.log(`    steering, one vector: step ${ms(sv.step)} ms, CPU ${cpuPct(st.steer)} over plain (${sv.callbacks.toFixed(0)} JS calls/step; llama.cpp's control vector)   (goal ≤ 3%)`);
    const ab = medianBreakdown(st.ablate);
    console.log(`    ablation, one vector: step ${ms(ab.step)} ms, CPU ${cpuPct(st.ablate)} over plain (${ab.callbacks.toFixed(0)} JS calls/step; hooked steering)   (goal ≤ 3%)`);
    const js = jsSteps.get(p)!;
    if (js.captureOne.length > 0) {
      const calls = (xs: StepBreakdown[]) => medianBreakdown(xs).callbacks.toFixed(0);
      console.log(`    the same without the eval filter (every node asked in JS): capture ${cpuPct(js.captureOne)} (${calls(js.captureOne)} JS calls/step), ablation ${cpuPct(js.ablate)} (${calls(js.ablate)})`);
    }
    if (split) console.log(`    llama-batched-bench step ${ms(split.step)} (per-sequence KV)${unified ? `, ${ms(unified.step)} (unified)` : ""}; it reads no logits and samples nothing`);
  }
}

/** Single-sequence plain generation at one thread count and polling level (undefined: the defaults). */
async function benchLoadCase(threads: number | undefined, poll: number | undefined): Promise<{ seconds: number; threads: number }> {
  await using engine = await Engine.create({ gpu: "cpu", threads, poll });
  const model = await engine.loadModel(MODEL);
  const requests = [{ prompt: await model.tokenize(PROMPT) }];
  const t = await timeIt(async () => void (await model.generate(requests, { temperature: 0, maxTokens: TOKENS, minTokens: TOKENS })));
  return { seconds: t, threads: engine.threads };
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
  console.log(`  load average before: ${load()}`);
  const tps = (t: number) => (TOKENS / t).toFixed(1).padStart(8);
  const row = (label: string, idle: { seconds: number; threads: number }, loaded: { seconds: number; threads: number }) =>
    console.log(`  ${label}   idle ${tps(idle.seconds)}   busy ${tps(loaded.seconds)}   busy/idle ${(idle.seconds / loaded.seconds).toFixed(2)}×`);
  for (const threads of threadCounts) {
    for (const poll of polls) {
      row(`threads ${threads} poll ${String(poll).padStart(3)}`, await benchLoadCase(threads, poll), await busy(() => benchLoadCase(threads, poll)));
    }
  }
  // The defaults read the 1-minute load average when the engine starts: a neighbour that has just
  // started does not show in it yet, one that has run for a while does.
  const idle = await benchLoadCase(undefined, undefined);
  const loaded = await busy(() => benchLoadCase(undefined, undefined));
  row(`defaults (threads ${idle.threads} idle, ${loaded.threads} busy; poll ${DEFAULT_POLL})`, idle, loaded);
  console.log(`  load average after: ${load()}`);
}

async function main(): Promise<void> {
  const what =
    MODEL === benchModelPath
      ? `${(randomModelParamCount(BENCH_MODEL_CFG) / 1e6).toFixed(1)}M params (llama, F16, ${BENCH_MODEL_CFG.nLayer} layers)`
      : path.relative(".", MODEL);
  if (MODEL === benchModelPath) await ensureBenchModel();
  console.log(`model: ${what}, ${TOKENS} new tokens per sequence, ${THREADS} threads, ${availableParallelism()} cores`);
  const part = (name: string) => args.only === undefined || args.only === name;
  if (part("batch")) await benchBatch();
  if (part("loop")) await benchLoop();
  if (part("load")) await benchLoad();
}

async function benchLoop(): Promise<void> {
  console.log(`\ndecode loop vs batch API, same requests; tok/s by wall clock and by process CPU time; load average ${loadavg()[0]!.toFixed(2)}`);
  for (const callers of PARALLEL) {
    const t = await benchLoopCase({ modelPath: MODEL, threads: THREADS, callers, tokens: TOKENS, prompt: PROMPT, repeats: REPEATS });
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
