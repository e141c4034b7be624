/**
 * Server benchmark: `persona serve` (a child process) under loopback load from 1, 8 and 32
 * concurrent streaming clients, each sending requests back to back: requests/s, tokens/s, time
 * to first token, p50/p99 latency, errors and the server's peak RSS; the same load with three
 * traits monitored and with per-request steering, as ratios against requests without a persona
 * field; and the engine's own batched generation (its decode loop, same model, prompts, slots and
 * token counts, in this process) for the server-vs-engine ratio. All from one run.
 *
 *   npm run bench:serve [-- --model demo --clients 1,8,32 --requests 4 --tokens 32 --parallel 8 --threads 2 --repeats 3]
 *
 * Cells run interleaved (every client count and mode once per repeat), and ratios are medians of
 * per-repeat ratios, so a busy neighbour on the machine skews them less.
 *
 * Every request generates exactly --tokens tokens (`ignore_eos`), so modes and engine compare
 * token for token.
 */
import { spawn } from "node:child_process";
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
import { row } from "../src/vectors/format.js";

const { values: args } = parseArgs({
  options: {
    model: { type: "string", default: "demo" },
    clients: { type: "string", default: "1,8,32" },
    requests: { type: "string", default: "4" },
    tokens: { type: "string", default: "32" },
    parallel: { type: "string", default: "8" },
    threads: { type: "string", default: String(availableParallelism()) },
    repeats: { type: "string", default: "3" },
  },
});
const CLIENTS = args.clients.split(",").map(Number);
const REQUESTS = Number(args.requests);
const TOKENS = Number(args.tokens);
const PARALLEL = Number(args.parallel);
const THREADS = Number(args.threads);
const REPEATS = Number(args.repeats);
const CLI = fileURLToPath(new URL("../src/cli/bin.ts", import.meta.url));
const QUESTIONS = ["How should I treat my neighbour?", "Tell me about the moon.", "What is a good breakfast?", "Can you help me plan a trip?"];

type Mode = "none" | "monitor3" | "steer";
const PERSONA: Record<Mode, object | undefined> = {
  none: undefined,
  monitor3: { monitor: ["evil", "sycophantic", "hallucinating"] },
  steer: { steer: [{ trait: "evil", coef: -2 }] },
};

interface LoadResult {
  seconds: number;
  requests: number;
  tokens: number;
  errors: number;
  ttft: number[];
  latency: number[];
}

function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

async function startServer(): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), "persona-bench-serve-"));
  const config = path.join(dir, "serve.json");
  // No default monitoring, so "none" really is a request without any persona work.
  await writeFile(config, JSON.stringify({ monitor: [] }));
  const child = spawn(
    process.execPath,
    ["--import", "tsx", CLI, "serve", "--model", args.model, "--port", "0", "--threads", String(THREADS), "--parallel", String(PARALLEL), "--ctx", "512", "--queue", "256", "--config", config],
    { stdio: ["ignore", "pipe", "inherit"] },
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
  let tokens = 0;
  let buf = "";
  const decoder = new TextDecoder();
  for await (const bytes of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(bytes, { stream: true });
    if (Number.isNaN(ttft) && buf.includes('"content":"') && /"content":"[^"]/.test(buf)) ttft = (performance.now() - t0) / 1000;
    const m = /"completion_tokens":(\d+)/.exec(buf);
    if (m) tokens = Number(m[1]);
  }
  if (!buf.includes("data: [DONE]")) throw new Error("stream ended without [DONE]");
  return { ttft, latency: (performance.now() - t0) / 1000, tokens };
}

async function load(url: string, clients: number, mode: Mode): Promise<LoadResult> {
  const r: LoadResult = { seconds: 0, requests: 0, tokens: 0, errors: 0, ttft: [], latency: [] };
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let k = 0; k < REQUESTS; k++) {
        try {
          const one = await streamOne(url, c * REQUESTS + k, PERSONA[mode]);
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
  return r;
}

function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** The engine's own decode loop, same model, slots, prompts and token counts: `clients` request streams back to back. */
async function openEngineBaseline(): Promise<{ run(clients: number, monitor: boolean): Promise<number>; close(): Promise<void> }> {
  const engine = await Engine.create({ threads: THREADS });
  const model = await engine.loadModel(await resolveModelRef(args.model));
  const loop = await model.openLoop({ slots: PARALLEL, ctxPerSlot: 512 });
  const prompts = await Promise.all(QUESTIONS.map((q) => model.encodeChat([{ role: "user", content: q }])));
  // The same three probes the server's monitoring uses (each trait at its layer).
  const traits = [...(await loadServedTraits(model, ["evil", "sycophantic", "hallucinating"])).values()];
  const probes = model.probes(traits.map((t) => ({ layer: t.layer, vector: Float32Array.from(row(t.matrix, t.layer)) })));
  return {
    async run(clients, monitor) {
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
      return tokens / ((performance.now() - t0) / 1000);
    },
    close: () => engine.dispose(),
  };
}

const median = (xs: number[]) => quantile(xs, 0.5);
const MODES: Mode[] = ["none", "monitor3", "steer"];
const engine = CLIENTS.includes(8) ? await openEngineBaseline() : null;
const server = await startServer();
console.log(`persona serve --model ${args.model} --parallel ${PARALLEL} --threads ${THREADS}; ${REQUESTS} requests per client, ${TOKENS} tokens each, ${REPEATS} interleaved repeats\n`);
// Warm-up: first requests pay for lazy initialisation.
await load(server.url, 2, "none");
const merged = new Map<string, LoadResult>();
/** tokens/s of each cell per repeat; cells of one repeat run back to back, so their ratios share the machine's state. */
const perRepeat = new Map<string, number[]>();
const engineTps: number[] = [];
const engineMonitorTps: number[] = [];
for (let rep = 0; rep < REPEATS; rep++) {
  for (const clients of CLIENTS) {
    for (const mode of MODES) {
      const key = `${clients}/${mode}`;
      const r = await load(server.url, clients, mode);
      const m = merged.get(key);
      if (!m) merged.set(key, r);
      else {
        m.seconds += r.seconds;
        m.requests += r.requests;
        m.tokens += r.tokens;
        m.errors += r.errors;
        m.ttft.push(...r.ttft);
        m.latency.push(...r.latency);
      }
      perRepeat.set(key, [...(perRepeat.get(key) ?? []), r.tokens / r.seconds]);
    }
  }
  if (engine) {
    engineTps.push(await engine.run(8, false));
    engineMonitorTps.push(await engine.run(8, true));
  }
}
const rss = peakRss(server.pid);
await server.stop();
await engine?.close();
const head = ["clients", "persona", "req/s", "tok/s", "ttft p50 ms", "p50 ms", "p99 ms", "errors"];
const rows = [...merged.entries()].map(([key, r]) => [
  ...key.split("/"),
  (r.requests / r.seconds).toFixed(2),
  (r.tokens / r.seconds).toFixed(1),
  (quantile(r.ttft, 0.5) * 1000).toFixed(0),
  (quantile(r.latency, 0.5) * 1000).toFixed(0),
  (quantile(r.latency, 0.99) * 1000).toFixed(0),
  String(r.errors),
]);
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
for (const r of [head, ...rows]) console.log(r.map((c, i) => c.padStart(widths[i]!)).join("  "));
console.log(`\nserver peak RSS: ${rss.toFixed(0)} MB`);
const ratio = (a: string, b: number[] | string) => {
  const den = typeof b === "string" ? perRepeat.get(b)! : b;
  return median(perRepeat.get(a)!.map((x, i) => x / den[i]!)).toFixed(3);
};
console.log("\nthroughput ratios, tokens/s (median over repeats of each repeat's ratio):");
for (const clients of CLIENTS) {
  console.log(`  ${String(clients).padStart(2)} clients: monitoring 3 traits / no persona field ${ratio(`${clients}/monitor3`, `${clients}/none`)}, per-request steering / no persona field ${ratio(`${clients}/steer`, `${clients}/none`)}`);
}
if (engine) {
  console.log(`  server at 8 clients / the engine's decode loop with 8 request streams (median ${median(engineTps).toFixed(1)} tok/s): ${ratio("8/none", engineTps)}`);
  // What the same probes cost the engine alone: the part of monitoring's price that is not the server's.
  console.log(`  engine alone, 8 streams: monitoring 3 traits / none ${median(engineMonitorTps.map((x, i) => x / engineTps[i]!)).toFixed(3)}`);
}
