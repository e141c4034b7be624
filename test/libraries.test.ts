/**
 * Which CPU backend decodes: the one built here from the pinned source (`npm run build:llama`) by
 * default once it is built, else (or with PERSONA_CPU_BACKEND=prebuilt) the prebuilt variants. Both
 * decode the same tokens; a backend that is missing or not stamped as built from the pinned source
 * is refused before native code sees it.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { Engine } from "../src/engine/Engine.js";
import { CPU_BACKEND_STAMP } from "../src/engine/ffi/discover.js";
import { LOCAL_CPU_BACKEND } from "../scripts/llama-source.js";
import { writeTinyChatModel } from "./helpers/tiny-chat-model.js";

let dir: string;
let modelPath: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-libraries-"));
  modelPath = path.join(dir, "tiny.gguf");
  await writeTinyChatModel(modelPath, { nLayer: 2, nEmbd: 32, contextLength: 128, seed: 7 });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const isNoLibrary = (pattern: RegExp) => (e: Error & { code?: string }) => {
  assert.equal(e.code, "E_NO_LIBRARY");
  assert.match(e.message, pattern);
  return true;
};

interface Decoded {
  cpuBackend?: string;
  mapped: string[];
  tokens: number[][];
  logprobs: number[];
}

/** test/helpers/decode-child.ts's output (a process has one CPU backend); undefined: the default. */
async function decodeIn(cpuBackend: string | undefined): Promise<Decoded> {
  const env = { ...process.env, PERSONA_CPU_BACKEND: cpuBackend ?? "" };
  const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", path.resolve("test/helpers/decode-child.ts"), modelPath], { env });
  return JSON.parse(stdout.trim().split("\n").pop()!) as Decoded;
}

describe("CPU backend", () => {
  it("a missing or unstamped CPU backend is refused with E_NO_LIBRARY before it is loaded", async () => {
    await assert.rejects(Engine.create({ gpu: "cpu", threads: 1, cpuBackend: path.join(dir, "missing.so") }), isNoLibrary(/does not exist \(npm run build:llama builds one\)/));
    // Any file will do: the stamp check comes first, so native code never loads it.
    const fake = path.join(dir, "libggml-cpu.so");
    await writeFile(fake, "not a library");
    await assert.rejects(Engine.create({ gpu: "cpu", threads: 1, cpuBackend: fake }), isNoLibrary(/is not known to be built from node-llama-cpp@3\.21\.1/));
    await writeFile(path.join(dir, CPU_BACKEND_STAMP), JSON.stringify({ source: "node-llama-cpp@3.0.0" }));
    await assert.rejects(Engine.create({ gpu: "cpu", threads: 1, cpuBackend: fake }), isNoLibrary(/no matching persona-build\.json/));
  });

  const built = existsSync(LOCAL_CPU_BACKEND);
  it("the self-built CPU backend (npm run build:llama) is the default once built and decodes what the prebuilt one (\"prebuilt\") decodes", { skip: built ? false : `not built: ${LOCAL_CPU_BACKEND} (npm run build:llama)` }, async () => {
    const [a, b] = await Promise.all([decodeIn("prebuilt"), decodeIn(undefined)]);
    assert.equal(a.cpuBackend, undefined);
    assert.equal(a.mapped.length, 1, "one prebuilt CPU variant");
    assert.match(a.mapped[0]!, /node_modules\/@node-llama-cpp\/.*\/libggml-cpu-[\w-]+\.so$/);
    assert.equal(b.cpuBackend, LOCAL_CPU_BACKEND);
    assert.deepEqual(b.mapped, [LOCAL_CPU_BACKEND], "the self-built backend and no prebuilt variant");
    assert.deepEqual(b.tokens, a.tokens);
    assert.equal(b.logprobs.length, 12);
    for (let i = 0; i < 12; i++) assert.ok(Math.abs(b.logprobs[i]! - a.logprobs[i]!) < 1e-4, `token ${i}: ${b.logprobs[i]} vs ${a.logprobs[i]}`);
  });
});
