/** `persona chat` driven through piped stdin: history, /reset, /steer, /unsteer, /system, /quit, errors. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import { layerMatrix, writeVectors } from "../src/vectors/format.js";
import { writeTinyChatModel } from "./helpers/tiny-chat-model.js";

const CLI = path.resolve("src/cli/bin.ts");
const N_LAYER = 3;
const N_EMBD = 32;

function chat(input: string, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", CLI, "chat", "--model", modelPath, "--threads", "2", ...args], {
      env: { ...process.env, PERSONA_GPU: "cpu" },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString("utf8")));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

interface Turn {
  turn: number;
  reply: string;
  tokens: number[];
  prompt_tokens: number;
  steering: string[];
}

let dir: string;
let modelPath: string;
let vectorsPath: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-chat-"));
  modelPath = path.join(dir, "tiny.gguf");
  await writeTinyChatModel(modelPath, { nLayer: N_LAYER, nEmbd: N_EMBD, contextLength: 512, seed: 3 });
  vectorsPath = path.join(dir, "trait.safetensors");
  const data = Float32Array.from({ length: (N_LAYER + 1) * N_EMBD }, (_, i) => Math.sin(i) * 3);
  await writeVectors(vectorsPath, { tensors: { response_avg: layerMatrix(N_LAYER + 1, N_EMBD, data) }, meta: { trait: "testy", source: "extract", bestLayer: 2 } });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("persona chat (piped stdin)", () => {
  it("keeps the history, resets, steers and unsteers, and stops at /quit", async () => {
    const script = [
      "Hello there",
      "And how are you?",
      "/reset",
      "Hello there",
      `/steer ${vectorsPath}::8`,
      "/reset",
      "Hello there",
      "/unsteer",
      "/reset",
      "Hello there",
      "/quit",
      "This line comes after /quit",
    ].join("\n");
    const r = await chat(`${script}\n`, "--temperature", "0", "--max-tokens", "10", "--json");
    assert.equal(r.code, 0, r.stderr);
    const turns = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as Turn);
    assert.equal(turns.length, 5, "one reply per message before /quit");
    const [first, second, afterReset, steered, unsteered] = turns as [Turn, Turn, Turn, Turn, Turn];
    assert.ok(first.tokens.length > 0);

    // The second turn's prompt is the templated conversation so far: user, assistant reply, user.
    const engine = await Engine.create({ threads: 2, gpu: "cpu" });
    try {
      const model = await engine.loadModel(modelPath);
      const p1 = await model.encodeChat([{ role: "user", content: "Hello there" }]);
      const p2 = await model.encodeChat([
        { role: "user", content: "Hello there" },
        { role: "assistant", content: first.reply },
        { role: "user", content: "And how are you?" },
      ]);
      assert.equal(first.prompt_tokens, p1.length);
      assert.equal(second.prompt_tokens, p2.length);
    } finally {
      await engine.dispose();
    }

    assert.deepEqual(afterReset.tokens, first.tokens, "greedy, after /reset: the same reply");
    assert.equal(afterReset.prompt_tokens, first.prompt_tokens);
    assert.deepEqual(steered.steering, [`${vectorsPath}:best:8:response`], "response is the default position");
    assert.notDeepEqual(steered.tokens, first.tokens, "a strong vector changes the reply");
    assert.deepEqual(unsteered.steering, []);
    assert.deepEqual(unsteered.tokens, first.tokens);
    assert.match(r.stderr, /steering: .*trait\.safetensors:best:8:response/);
    assert.match(r.stderr, /conversation cleared/);
  });

  it("streams plain text, and a system prompt set by /system changes the reply", async () => {
    const plain = await chat("Hello there\n/system You are a pirate.\n/reset\nHello there\n", "--temperature", "0", "--max-tokens", "10", "--json");
    assert.equal(plain.code, 0, plain.stderr);
    const [a, b] = plain.stdout.trim().split("\n").map((l) => JSON.parse(l) as Turn);
    assert.ok(b!.prompt_tokens > a!.prompt_tokens);
    assert.notDeepEqual(b!.tokens, a!.tokens);

    const streamed = await chat("Hello there\n", "--temperature", "0", "--max-tokens", "10");
    assert.equal(streamed.code, 0, streamed.stderr);
    // Streamed text is the detokenized reply (stdin ended: the chat ends without /quit).
    assert.equal(streamed.stdout, `${a!.reply}\n`);
  });

  it("leaves the oldest exchanges out when the conversation outgrows the trained context", async () => {
    const small = path.join(dir, "small-ctx.gguf");
    await writeTinyChatModel(small, { nLayer: 2, nEmbd: 32, contextLength: 64, seed: 4 });
    const r = await chat("Hello there\nHello there\nHello there\n", "--model", small, "--temperature", "0", "--max-tokens", "12", "--json");
    assert.equal(r.code, 0, r.stderr);
    const turns = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as Turn);
    assert.equal(turns.length, 3);
    // A prompt may use the context less the reply's room (min(max tokens, context / 2) = 12).
    for (const t of turns) assert.ok(t.prompt_tokens <= 64 - 12, `prompt of ${t.prompt_tokens} tokens`);
    assert.match(r.stderr, /oldest exchanges no longer fit/);
  });

  it("reports a bad /steer, keeps going, and still succeeds: the mistake was refused, not the chat", async () => {
    const r = await chat(`/steer nowhere:1:2\n/steer ${vectorsPath}:9:1\n/steer evil:2:1:middle\n/bogus\n/help\nHello there\n`, "--temperature", "0", "--max-tokens", "4", "--json");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /E_NOT_FOUND/);
    assert.match(r.stderr, /\/steer "evil:2:1:middle": position "middle" is not response, prompt, all.*\[E_BAD_STEER_ARG\]/);
    assert.match(r.stderr, /out of range.*E_SHAPE/);
    assert.match(r.stderr, /unknown command \/bogus/);
    assert.match(r.stderr, /\/unsteer/);
    const turns = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as Turn);
    assert.equal(turns.length, 1);
    assert.deepEqual(turns[0]!.steering, [], "failed /steer adds nothing");
  });
});
