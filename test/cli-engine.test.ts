/** The engine's CLI surface, run as a user would, in process (test/helpers/cli.ts). */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import { layerMatrix, writeVectors } from "../src/vectors/format.js";
import { readSafetensors } from "../src/vectors/safetensors.js";
import { runCli } from "./helpers/cli.js";
import { writeTinyChatModel } from "./helpers/tiny-chat-model.js";

const N_LAYER = 3;
const N_EMBD = 32;

const persona = (...args: string[]) => runCli([...args, "--threads", "2"], { PERSONA_GPU: "cpu" });

let dir: string;
let modelPath: string;
let vectorsPath: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-cli-"));
  modelPath = path.join(dir, "tiny.gguf");
  await writeTinyChatModel(modelPath, { nLayer: N_LAYER, nEmbd: N_EMBD, contextLength: 256, seed: 3 });
  vectorsPath = path.join(dir, "trait.safetensors");
  const data = Float32Array.from({ length: (N_LAYER + 1) * N_EMBD }, (_, i) => Math.sin(i) * 3);
  await writeVectors(vectorsPath, { tensors: { response_avg: layerMatrix(N_LAYER + 1, N_EMBD, data) }, meta: { trait: "testy", source: "extract", bestLayer: 2 } });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("persona model info", () => {
  it("reports the model's shape as JSON", async () => {
    const r = await persona("model", "info", "--model", modelPath, "--json");
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    assert.equal(info.architecture, "llama");
    assert.equal(info.n_layer, N_LAYER);
    assert.equal(info.n_embd, N_EMBD);
    assert.equal(info.chat_template, true);
    assert.ok(info.n_vocab > 256);
  });

  it("fails with a clear message for a missing model", async () => {
    const r = await persona("model", "info", "--model", path.join(dir, "none.gguf"));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not found.*E_NOT_FOUND/);
  });
});

describe("persona generate", () => {
  it("generates greedily, and steering (file, best layer) changes the output", async () => {
    const base = ["generate", "--model", modelPath, "--prompt", "Hello there", "--temperature", "0", "--max-tokens", "12", "--json"];
    const plain = await persona(...base);
    assert.equal(plain.code, 0, plain.stderr);
    const p = JSON.parse(plain.stdout);
    assert.equal(p.samples.length, 1);
    assert.ok(p.samples[0].tokens.length > 0);
    const again = JSON.parse((await persona(...base)).stdout);
    assert.deepEqual(again.samples[0].tokens, p.samples[0].tokens, "greedy is deterministic");
    const steered = await persona(...base, "--steer", `${vectorsPath}::8`);
    assert.equal(steered.code, 0, steered.stderr);
    assert.notDeepEqual(JSON.parse(steered.stdout).samples[0].tokens, p.samples[0].tokens);
  });

  it("rejects malformed steering with exit code 2 and misfitting steering with exit code 1", async () => {
    const base = ["generate", "--model", modelPath, "--prompt", "x", "--max-tokens", "2"];
    const badSyntax = await persona(...base, "--steer", `${vectorsPath}:two:1`);
    assert.equal(badSyntax.code, 2, "a malformed flag is a usage error");
    assert.match(badSyntax.stderr, /^persona: --steer ".*:two:1": layer "two" is not a non-negative integer or a range A-B; .*see `persona generate --help` \[E_USAGE\]\n$/);
    const layer0 = await persona(...base, "--steer", `${vectorsPath}:0:1`);
    assert.equal(layer0.code, 1);
    assert.match(layer0.stderr, /layer 0.*E_SHAPE/);
    const tooHigh = await persona(...base, "--steer", `${vectorsPath}:${N_LAYER + 1}:1`);
    assert.match(tooHigh.stderr, /out of range.*E_SHAPE/);
    const unknown = await persona(...base, "--steer", "no-such-trait::1");
    assert.match(unknown.stderr, /E_NOT_FOUND/);
  });
});

describe("persona activations", () => {
  it("writes [n_samples, n_layer+1, n_embd] tensors equal to the engine's capture", async () => {
    const input = path.join(dir, "pairs.jsonl");
    const lines = [
      { prompt: "Q: where?", response: " Over there." },
      { messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "hello friend" }] },
    ];
    await writeFile(input, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
    const out = path.join(dir, "acts.safetensors");
    const r = await persona("activations", "--model", modelPath, "--input", input, "--out", out, "--json");
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.deepEqual(report.shape, [2, N_LAYER + 1, N_EMBD]);
    const { tensors } = await readSafetensors(out);
    for (const name of ["response_avg", "prompt_avg", "prompt_last"]) assert.deepEqual(tensors.get(name)!.shape, [2, N_LAYER + 1, N_EMBD]);

    await using engine = await Engine.create({ gpu: "cpu", threads: 2 });
    const model = await engine.loadModel(modelPath);
    const s0 = await model.encodePair("Q: where?", " Over there.");
    const s1 = await model.encodeConversation(lines[1]!.messages!);
    assert.deepEqual(report.samples[0].tokens, Array.from(s0.tokens));
    assert.equal(report.samples[1].prompt_length, s1.promptLength);
    const [a0, a1] = await model.capture([s0, s1]);
    const per = (N_LAYER + 1) * N_EMBD;
    assert.deepEqual(tensors.get("response_avg")!.data.subarray(0, per), a0!.responseAvg);
    assert.deepEqual(tensors.get("prompt_last")!.data.subarray(per), a1!.promptLast);
  });

  it("rejects malformed input lines with the line number", async () => {
    const input = path.join(dir, "bad.jsonl");
    await writeFile(input, '{"prompt": "a", "response": "b"}\n{"prompt": 3}\n');
    const r = await persona("activations", "--model", modelPath, "--input", input, "--out", path.join(dir, "x.safetensors"));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad\.jsonl:2.*E_BAD_FORMAT/);
  });
});
