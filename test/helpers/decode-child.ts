/**
 * Decodes a model in a process of its own (a process has one CPU backend; PERSONA_CPU_BACKEND
 * chooses it) and prints JSON: the engine's CPU backend, the CPU backend libraries mapped into the
 * process (Linux), the greedy tokens of three prompts decoded together, and exact-mode
 * log-probabilities of the third one's tokens.
 *   node --import tsx test/helpers/decode-child.ts MODEL
 */
import { readFileSync } from "node:fs";
import { Engine } from "../../src/engine/Engine.js";

await using engine = await Engine.create({ gpu: "cpu", threads: 1 });
const model = await engine.loadModel(process.argv[2]!);
const prompts = await Promise.all(["Hello", "The cat", "Once upon a time"].map((t) => model.tokenize(t)));
const rs = await model.generate(
  prompts.map((prompt) => ({ prompt })),
  { temperature: 0, maxTokens: 12, minTokens: 12 },
);
const [lp] = await model.logprobs([{ prompt: prompts[2]!, continuation: rs[2]!.tokens }], { exact: true });
const { cpuBackend } = await engine.systemInfo();
const mapped = [...new Set(readFileSync("/proc/self/maps", "utf8").match(/\/\S*libggml-cpu\S*\.so/g))];
console.log(JSON.stringify({ cpuBackend, mapped, tokens: rs.map((r) => [...r.tokens]), logprobs: [...lp!.continuation] }));
