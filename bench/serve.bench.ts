/**
 * Server benchmark: `persona serve` (a child process) under loopback load from 1, 8 and 32
 * concurrent streaming clients, each sending requests back to back: requests/s, tokens/s, time
 * to first token, p50/p99 latency, errors and the server's peak RSS; the same load with three
 * traits monitored and with per-request steering, as ratios against requests without a persona
 * field; and the engine's own batched generation (its decode loop, same model, prompts, slots and
 * token counts, in this process) for the server-vs-engine ratio. All from one run, for the demo
 * model and for the 52M-parameter bench model (bench/bench-model.ts, with random vectors for the
 * three traits), where a decode step's compute dominates per-token bookkeeping as with real models.
 *
 *   npm run bench:serve [-- --models demo,bench-52m --clients 1,8,32 --requests 4 --tokens 32 --parallel 8 --threads 2 --repeats 3 --cpu-prof DIR]
 *
 * Cells run interleaved (every client count and mode once per repeat), and ratios are medians of
 * per-repeat ratios, so a busy neighbour on the machine skews them less. Next to wall-clock
 * figures the bench reports CPU time per generated token (from /proc, user + system, all threads)
 * of the server process, of its main (HTTP) thread, of the load generator (this process's main
 * thread) and of the engine-only run, and the ratios by CPU time too: on a shared machine CPU time
 * moves far less than wall time, and on a server with its own cores throughput is cores / CPU per
 * token once it is CPU-bound.
 *
 * Every request generates exactly --tokens tokens (`ignore_eos`), so modes and engine compare
 * token for token.
 */
import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import "../src/demo/register.js";
import { Engine } from "../src/engine/Engine.js";
import { resolveModelRef } from "../src/hub/resolve.js";
import { loadServedTraits } from "../src/server/persona.js";
import { layerMatrix, row, writeVectors } from "../src/vectors/format.js";
import { BENCH_MODEL_CFG, ensureBenchModel } from "./bench-model.js";

const { values: args } = parseArgs({
  options: {
    models: { type: "string", default: "demo,bench-52m" },
    clients: { type: "string", default: "1,8,32" },
    requests: { type: "string", default: "4" },
    tokens: { type: "string", default: "32" },
    parallel: { type: "string", default: "8" },
    threads: { type: "string", default: String(availableParallelism()) },
    repeats: { type: "string", default: "3" },
    /** Writes V8 CPU profiles of the server's threads (node --cpu-prof) into this directory. */
    "cpu-prof": { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});
if (args.help) {
  console.log(`npm run bench:serve [-- options]
  --models LIST    demo and/or bench-52m (default demo,bench-52m)
  --clients LIST   concurrent streaming clients per cell (default 1,8,32; 8 adds the engine-only baseline)
  --requests N     requests each client sends back to back (default 4; more means less of a cell is its
                   start and its end, when fewer clients are left)
  --tokens N       tokens per reply, exactly (default 32)
  --parallel N     the server's --parallel, and the engine baseline's slots (default 8)
  --threads N      decoding threads (default: the cores)
  --repeats N      interleaved repeats; ratios are medians of per-repeat ratios (default 3)
  --cpu-prof DIR   V8 CPU profiles of the server's threads`);
  process.exit(0);
}
const MODELS = args.models.split(",");
const CLIENTS = args.clients.split(",").map(Number);
const REQUESTS = Number(args.requests);
const TOKENS = Number(args.tokens);
const PARALLEL = Number(args.parallel);
const THREADS = Number(args.threads);
const REPEATS = Number(args.repeats);
const CLI = fileURLToPath(new URL("../src/cli/bin.ts", import.meta.url));
const QUESTIONS = ["How should I treat my neighbour?", "Tell me about the moon.", "What is a good breakfast?", "Can you help me plan a trip?"];
const TRAITS = ["evil", "sycophantic", "hallucinating"];
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }));

type Mode = "none" | "monitor3" | "steer";
const MODES: Mode[] = ["none", "monitor3", "steer"];
const PERSONA: Record<Mode, object | undefined> = {
  none: undefined,
  monitor3: { monitor: TRAITS },
  steer: { steer: [{ trait: "evil", coef: -2 }] },
};

interface LoadResult {
  seconds: number;
  requests: number;
  tokens: number;
  errors: number;
  ttft: number[];
  latency: number[];
  /** CPU seconds of the server process (all threads), of its main thread, and of the load generator. */
  serverCpu: number;
  serverMainCpu: number;
  clientCpu: number;
}

function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}
const median = (xs: number[]) => quantile(xs, 0.5);

/** CPU seconds (user + system) a process (all its threads, ended ones included) or one of its threads has used; 1/CLK_TCK resolution. */
function cpuSeconds(pid: number, tid?: number): number {
  const s = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, "utf8");
  // Fields after the parenthesised name start at field 3 (state); utime and stime are fields 14 and 15.
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

async function startServer(model: string, env: NodeJS.ProcessEnv): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), "persona-bench-serve-"));
  const config = path.join(dir, "serve.json");
  // No default monitoring, so "none" really is a request without any persona work.
  await writeFile(config, JSON.stringify({ monitor: [] }));
  const child = spawn(
    process.execPath,
    [...(args["cpu-prof"] ? ["--cpu-prof", "--cpu-prof-dir", args["cpu-prof"]] : []), "--import", "tsx", CLI, "serve", "--model", model, "--traits", TRAITS.join(","), "--port", "0", "--threads", String(THREADS), "--parallel", String(PARALLEL), "--ctx", "512", "--queue", "256", "--config", config],
    { stdio: ["ignore", "pipe", "inherit"], env },
  );
  child.once("exit", () => void rm(dir, { recursive: true, force: true }));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.once("data", (d: Buffer) => resolve(d.toString().trim()));
    child.once("exit", (code) => reject(new Error(`persona serve exited ${code}`)));
  });
  return {
    url,
    pid: child.pid!,
    stop: () =>
      new Promise((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

/** One streaming request; returns time to first content and total latency (seconds), and tokens. */
async function streamOne(url: string, i: number, persona: object | undefined): Promise<{ ttft: number; latency: number; tokens: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({
      messages: [{ role: "user", content: QUESTIONS[i % QUESTIONS.length] }],
      max_tokens: TOKENS,
      ignore_eos: true,
      temperature: 0.8,
      seed: i,
      stream: true,
      stream_options: { include_usage: true },
      ...(persona ? { persona } : {}),
    }),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttft = NaN;
  let tail = "";
  const decoder = new TextDecoder();
  for await (const bytes of res.body as unknown as AsyncIterable<Uint8Array>) {
    // Only the end of the stream matters past the first token: the usage chunk and [DONE].
    tail = (tail + decoder.decode(bytes, { stream: true })).slice(-512);
    if (Number.isNaN(ttft) && /"content":"[^"]/.test(tail)) ttft = (performance.now() - t0) / 1000;
  }
  if (!tail.includes("data: [DONE]")) throw new Error("stream ended without [DONE]");
  const m = /"completion_tokens":(\d+)/.exec(tail);
  return { ttft, latency: (performance.now() - t0) / 1000, tokens: m ? Number(m[1]) : 0 };
}

async function load(server: { url: string; pid: number }, clients: number, mode: Mode): Promise<LoadResult> {
  const r: LoadResult = { seconds: 0, requests: 0, tokens: 0, errors: 0, ttft: [], latency: [], serverCpu: 0, serverMainCpu: 0, clientCpu: 0 };
  const cpu0 = [cpuSeconds(server.pid), cpuSeconds(server.pid, server.pid), cpuSeconds(process.pid, process.pid)];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let k = 0; k < REQUESTS; k++) {
        try {
          const one = await streamOne(server.url, c * REQUESTS + k, PERSONA[mode]);
          r.requests++;
          r.tokens += one.tokens;
          r.ttft.push(one.ttft);
          r.latency.push(one.latency);
        } catch (e) {
          r.errors++;
          if (r.errors === 1) console.error(`  first error: ${(e as Error).message}`);
        }
      }
    }),
  );
  r.seconds = (performance.now() - t0) / 1000;
  r.serverCpu = cpuSeconds(server.pid) - cpu0[0]!;
  r.serverMainCpu = cpuSeconds(server.pid, server.pid) - cpu0[1]!;
  r.clientCpu = cpuSeconds(process.pid, process.pid) - cpu0[2]!;
  return r;
}

function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

interface EngineRun {
  tps: number;
  /** CPU seconds per token of this whole process (main thread, engine worker, ggml threads), and of the main thread alone. */
  cpuPerToken: number;
  mainCpuPerToken: number;
}

/** The engine's own decode loop, same model, slots, prompts and token counts: `clients` request streams back to back. */
async function openEngineBaseline(modelPath: string): Promise<{ run(clients: number, monitor: boolean): Promise<EngineRun>; close(): Promise<void> }> {
  const engine = await Engine.create({ threads: THREADS });
  const model = await engine.loadModel(modelPath);
  const loop = await model.openLoop({ slots: PARALLEL, ctxPerSlot: 512 });
  const prompts = await Promise.all(QUESTIONS.map((q) => model.encodeChat([{ role: "user", content: q }])));
  // The same three probes the server's monitoring uses (each trait at its layer).
  const traits = [...(await loadServedTraits(model, TRAITS)).values()];
  const probes = model.probes(traits.map((t) => ({ layer: t.layer, vector: Float32Array.from(row(t.matrix, t.layer)) })));
  return {
    async run(clients, monitor) {
      const c0 = process.cpuUsage();
      const m0 = cpuSeconds(process.pid, process.pid);
      const t0 = performance.now();
      let tokens = 0;
      await Promise.all(
        Array.from({ length: clients }, async (_, c) => {
          for (let k = 0; k < REQUESTS; k++) {
            const i = c * REQUESTS + k;
            const r = await loop.submit({ prompt: prompts[i % prompts.length]!, maxTokens: TOKENS, minTokens: TOKENS, temperature: 0.8, seed: i, ...(monitor ? { probes } : {}) }).result;
            tokens += r.tokens.length;
          }
        }),
      );
      const seconds = (performance.now() - t0) / 1000;
      const c = process.cpuUsage(c0);
      return { tps: tokens / seconds, cpuPerToken: (c.user + c.system) / 1e6 / tokens, mainCpuPerToken: (cpuSeconds(process.pid, process.pid) - m0) / tokens };
    },
    close: () => engine.dispose(),
  };
}

/** Random unit vectors for the three traits, in a directory the server finds through PERSONA_VECTORS_DIR. */
async function randomTraitVectors(nLayer: number, nEmbd: number): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "persona-bench-vectors-"));
  for (const trait of TRAITS) {
    const data = Float32Array.from({ length: (nLayer + 1) * nEmbd }, () => (Math.random() * 2 - 1) * Math.sqrt(3 / nEmbd));
    await writeVectors(path.join(dir, `${trait}.safetensors`), { tensors: { response_avg: layerMatrix(nLayer + 1, nEmbd, data) }, meta: { trait, source: "bench-random" } });
  }
  return dir;
}

const us = (seconds: number) => (seconds * 1e6).toFixed(0);

async function benchModel(label: string, modelRef: string, env: NodeJS.ProcessEnv): Promise<void> {
  const modelPath = await resolveModelRef(modelRef);
  const engine = CLIENTS.includes(8) ? await openEngineBaseline(modelPath) : null;
  const server = await startServer(modelPath, env);
  console.log(`\n== ${label}: persona serve --parallel ${PARALLEL} --threads ${THREADS}; ${REQUESTS} requests per client, ${TOKENS} tokens each, ${REPEATS} interleaved repeats`);
  // Warm-up: first requests pay for lazy initialisation.
  for (const mode of MODES) await load(server, 2, mode);
  const merged = new Map<string, LoadResult>();
  /** Each cell's per-repeat results; cells of one repeat run back to back, so their ratios share the machine's state. */
  const perRepeat = new Map<string, LoadResult[]>();
  const engineRuns: EngineRun[] = [];
  const engineMonitorRuns: EngineRun[] = [];
  for (let rep = 0; rep < REPEATS; rep++) {
    for (const clients of CLIENTS) {
      for (const mode of MODES) {
        const key = `${clients}/${mode}`;
        const r = await load(server, clients, mode);
        perRepeat.set(key, [...(perRepeat.get(key) ?? []), r]);
        const m = merged.get(key);
        if (!m) merged.set(key, { ...r, ttft: [...r.ttft], latency: [...r.latency] });
        else {
          for (const k of ["seconds", "requests", "tokens", "errors", "serverCpu", "serverMainCpu", "clientCpu"] as const) m[k] += r[k];
          m.ttft.push(...r.ttft);
          m.latency.push(...r.latency);
        }
      }
    }
    if (engine) {
      engineRuns.push(await engine.run(8, false));
      engineMonitorRuns.push(await engine.run(8, true));
    }
  }
  const rss = peakRss(server.pid);
  await server.stop();
  await engine?.close();

  const head = ["clients", "persona", "req/s", "tok/s", "ttft p50 ms", "p50 ms", "p99 ms", "errors", "server CPU µs/tok", "main thread", "client CPU µs/tok"];
  const rows = [...merged.entries()].map(([key, r]) => [
    ...key.split("/"),
    (r.requests / r.seconds).toFixed(2),
    (r.tokens / r.seconds).toFixed(1),
    (quantile(r.ttft, 0.5) * 1000).toFixed(0),
    (quantile(r.latency, 0.5) * 1000).toFixed(0),
    (quantile(r.latency, 0.99) * 1000).toFixed(0),
    String(r.errors),
    us(r.serverCpu / r.tokens),
    us(r.serverMainCpu / r.tokens),
    us(r.clientCpu / r.tokens),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [head, ...rows]) console.log(r.map((c, i) => c.padStart(widths[i]!)).join("  "));
  console.log(`\nserver peak RSS: ${rss.toFixed(0)} MB`);

  const tps = (r: LoadResult) => r.tokens / r.seconds;
  const cpuPerToken = (r: LoadResult) => r.serverCpu / r.tokens;
  // Throughput ratios: by wall clock (tokens/s) and by CPU (inverse CPU seconds per token), median over repeats.
  const ratios = (a: string, b: string) => {
    const xs = perRepeat.get(a)!;
    const ys = perRepeat.get(b)!;
    const wall = median(xs.map((x, i) => tps(x) / tps(ys[i]!))).toFixed(3);
    const cpu = median(xs.map((x, i) => cpuPerToken(ys[i]!) / cpuPerToken(x))).toFixed(3);
    return `${wall} wall, ${cpu} CPU`;
  };
  console.log("\nthroughput ratios against no persona field (median over repeats of each repeat's ratio; wall: tokens/s, CPU: server CPU per token):");
  for (const clients of CLIENTS) {
    console.log(`  ${String(clients).padStart(2)} clients: monitoring 3 traits ${ratios(`${clients}/monitor3`, `${clients}/none`)}; per-request steering ${ratios(`${clients}/steer`, `${clients}/none`)}`);
  }
  if (engine) {
    const server8 = perRepeat.get("8/none")!;
    const engineTps = median(engineRuns.map((e) => e.tps));
    const engineCpu = median(engineRuns.map((e) => e.cpuPerToken));
    console.log(
      `  engine's decode loop, 8 request streams in-process: ${engineTps.toFixed(1)} tok/s, ${us(engineCpu)} µs CPU/token (main thread ${us(median(engineRuns.map((e) => e.mainCpuPerToken)))})`,
    );
    console.log(
      `  server at 8 clients / engine: ${median(server8.map((r, i) => tps(r) / engineRuns[i]!.tps)).toFixed(3)} wall, ${median(server8.map((r, i) => engineRuns[i]!.cpuPerToken / cpuPerToken(r))).toFixed(3)} CPU (engine CPU per token / server CPU per token)`,
    );
    // What the same probes cost the engine alone: the part of monitoring's price that is not the server's.
    console.log(
      `  engine alone, 8 streams: monitoring 3 traits / none ${median(engineMonitorRuns.map((x, i) => x.tps / engineRuns[i]!.tps)).toFixed(3)} wall, ${median(engineMonitorRuns.map((x, i) => engineRuns[i]!.cpuPerToken / x.cpuPerToken)).toFixed(3)} CPU`,
    );
  }
}

console.log(`bench:serve, ${availableParallelism()} cores, ${THREADS} engine threads`);
for (const ref of MODELS) {
  if (ref === "bench-52m") {
    const modelPath = await ensureBenchModel();
    const dir = await randomTraitVectors(BENCH_MODEL_CFG.nLayer, BENCH_MODEL_CFG.nEmbd);
    const saved = process.env.PERSONA_VECTORS_DIR;
    process.env.PERSONA_VECTORS_DIR = dir;
    try {
      await benchModel("52M-parameter bench model (random weights and trait vectors)", modelPath, { ...process.env });
    } finally {
      if (saved === undefined) delete process.env.PERSONA_VECTORS_DIR;
      else process.env.PERSONA_VECTORS_DIR = saved;
      await rm(dir, { recursive: true, force: true });
    }
  } else await benchModel(`model ${ref}`, ref, { ...process.env });
}
