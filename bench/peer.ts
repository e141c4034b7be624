/**
 * The peer half of the engine benchmark: the same workload through node-llama-cpp's own API, in
 * its own process. Prints {"seconds": median} as its last line.
 *   node --import tsx bench/peer.ts MODEL PARALLEL TOKENS REPEATS THREADS PROMPT
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { BINARIES_VERSION } from "../src/engine/ffi/discover.js";

/** The slice of node-llama-cpp's API the benchmark drives (it is not installed at type-check time). */
interface PeerSequence {
  clearHistory(): Promise<void>;
  evaluate(tokens: unknown, o: { temperature: number }): AsyncIterable<unknown>;
}
interface PeerApi {
  LlamaLogLevel: { error: unknown };
  getLlama(o: object): Promise<{
    loadModel(o: { modelPath: string }): Promise<{
      tokenize(text: string): unknown;
      createContext(o: object): Promise<{ getSequence(): PeerSequence; dispose(): Promise<void> }>;
      dispose(): Promise<void>;
    }>;
    dispose(): Promise<void>;
  }>;
}

export async function loadPeer(): Promise<PeerApi> {
  const peerDir = path.resolve("bench/.peer");
  const entry = path.join(peerDir, "node_modules", "node-llama-cpp", "dist", "index.js");
  if (!existsSync(entry)) {
    mkdirSync(peerDir, { recursive: true });
    console.error(`installing node-llama-cpp@${BINARIES_VERSION} into ${peerDir} (once) ...`);
    // Optional platform packages are skipped: the peer finds the same prebuilt binaries we use
    // through Node's parent-directory module resolution.
    execFileSync("npm", ["install", "--prefix", peerDir, "--no-save", "--omit=optional", "--no-audit", "--no-fund", `node-llama-cpp@${BINARIES_VERSION}`], {
      stdio: ["ignore", "inherit", "inherit"],
    });
  }
  return (await import(pathToFileURL(entry).href)) as PeerApi;
}

const [modelPath, parallelArg, tokensArg, repeatsArg, threadsArg, prompt] = process.argv.slice(2) as [string, string, string, string, string, string];
const parallel = Number(parallelArg);
const tokens = Number(tokensArg);
const repeats = Number(repeatsArg);

const { getLlama, LlamaLogLevel } = await loadPeer();
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({ sequences: parallel, contextSize: parallel * 256, threads: Number(threadsArg), batchSize: 512 });
const promptTokens = model.tokenize(prompt);
const sequences = Array.from({ length: parallel }, () => context.getSequence());
const runOnce = async () => {
  await Promise.all(
    sequences.map(async (seq, i) => {
      await seq.clearHistory();
      let n = 0;
      for await (const _t of seq.evaluate(promptTokens, { temperature: 0 })) {
        if (++n >= tokens) break;
      }
      if (n !== tokens) throw new Error(`peer sequence ${i} stopped after ${n} tokens`);
    }),
  );
};
await runOnce(); // warm-up
const times: number[] = [];
for (let i = 0; i < repeats; i++) {
  const t0 = performance.now();
  await runOnce();
  times.push((performance.now() - t0) / 1000);
}
await context.dispose();
await model.dispose();
await llama.dispose();
times.sort((a, b) => a - b);
console.log(JSON.stringify({ seconds: times[Math.floor(times.length / 2)] }));
