/**
 * One plain-generation step breakdown (bench/breakdown.ts) in a process of its own, printed as JSON:
 * a process has one CPU backend, so the engine on the self-built one (`npm run build:llama`) is
 * measured here, next to the prebuilt one measured in the benchmark's process.
 *   node --import tsx bench/breakdown-child.ts MODEL CPU_BACKEND THREADS POLL PARALLEL TOKENS PROMPT
 */
import { Breakdown } from "./breakdown.js";

const [modelPath, cpuBackend, threads, poll, parallel, tokens, prompt] = process.argv.slice(2) as [string, string, string, string, string, string, string];
const b = await Breakdown.open(modelPath, Number(threads), Number(poll), { cpuBackend });
const ids = b.tokenize(prompt);
await b.measure("plain", ids, Number(parallel), Number(tokens)); // warm-up: context, first graphs
console.log(JSON.stringify(await b.measure("plain", ids, Number(parallel), Number(tokens))));
b.close();
