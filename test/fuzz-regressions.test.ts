/**
 * Inputs `npm run fuzz` found ending in a stack trace or a runaway process (not a GGUF load:
 * those are in llama-checks.test.ts), each now refused with a PersonaError.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Engine } from "../src/engine/Engine.js";
import { renderJinjaChat } from "../src/engine/chat.js";
import { PersonaError } from "../src/errors.js";
import { RecordLog, RunDir } from "../src/pipeline/rundir.js";
import { parsePt } from "../src/vectors/interop/torch.js";
import { tinyModelSpec, writeSpec } from "../scripts/fuzz/targets/gguf.js";
import { loraAdapterSpec } from "../scripts/fuzz/targets/lora.js";
import { GgufValueType } from "../src/engine/gguf/types.js";
import { convertHf } from "../src/convert/hf.js";
import { writeTinyCheckpoint } from "./helpers/hf-checkpoint.js";
import { ptArchive, singleTensorPickle } from "./helpers/torch-save.js";
import { anthropicMessage, chatCompletion, startFakeLLMServer } from "./helpers/fake-llm-server.js";
import { AnthropicJudge } from "../src/judge/anthropic.js";
import { OpenAIJudge, scoreFromTopLogprobs } from "../src/judge/openai.js";
import { createHash } from "node:crypto";
import { localServer, type PlannedReply } from "../scripts/fuzz/http.js";
import { pullModel } from "../src/hub/pull.js";
import { readMonitorPrompts } from "../src/pipeline/monitor.js";
import { readLabels } from "../src/pipeline/screen.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "fuzz-regressions-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function isCode(code: string, pattern: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof PersonaError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  };
}

describe("fuzz regressions", () => {
  it("a run log line that is JSON but not a record (was: TypeError reading 'key' of null)", async () => {
    const file = path.join(dir, "rollouts.jsonl");
    await writeFile(file, '{"key":"pos/0/0/0","value":1}\nnull\n');
    await assert.rejects(RecordLog.open(file), isCode("E_BAD_FORMAT", /rollouts\.jsonl:2 is not a \{"key", "value"\} record/));
  });

  it("a run.json that is JSON but not an object (was: TypeError reading 'kind' of null)", async () => {
    const run = path.join(dir, "run");
    await RunDir.open(run, "extract", { a: 1 });
    await writeFile(path.join(run, "run.json"), "null\n");
    await assert.rejects(RunDir.open(run, "extract", { a: 1 }), isCode("E_BAD_FORMAT", /run\.json is not a JSON object/));
  });

  it("a monitor prompts line that is JSON but not an object is named as such (was: the text of a TypeError reading 'messages' of null)", async () => {
    const file = path.join(dir, "prompts.jsonl");
    await writeFile(file, '{"messages":[{"role":"user","content":"hi"}]}\nnull\n[1]\n');
    await assert.rejects(readMonitorPrompts(file), isCode("E_BAD_FORMAT", /line 2: not a JSON object\n {2}line 3: not a JSON object$/));
  });

  it("a screen --labels line that is JSON but not an object (was: TypeError reading 'index' of null)", async () => {
    const file = path.join(dir, "labels.jsonl");
    await writeFile(file, '{"index":0,"trait_eliciting":true}\nnull\n');
    await assert.rejects(readLabels(file), isCode("E_BAD_FORMAT", /labels\.jsonl: label 2 needs an integer "index" and a boolean "trait_eliciting"/));
  });

  it("a zip central directory entry whose name runs past the end (was: RangeError from a DataView)", () => {
    const pt = ptArchive("a", singleTensorPickle({ storageType: "FloatStorage", key: "0", numel: 2, offset: 0, size: [1, 2], stride: [2, 1] }), { "0": new Uint8Array(8) });
    const view = new DataView(pt.buffer, pt.byteOffset, pt.byteLength);
    let cd = pt.length - 22;
    cd = view.getUint32(cd + 16, true); // first central directory entry
    view.setUint16(cd + 28, 0xffff, true); // its name length
    assert.throws(() => parsePt(pt, "x.pt"), isCode("E_BAD_FORMAT", /runs past the end of the file/));
  });

  it("a chat template that exhausts memory is stopped in its renderer, and rendering goes on", async () => {
    const o = { addGenerationPrompt: true, bosToken: "", eosToken: "" };
    // Its heap limit stops it, or on a loaded machine the time limit first: either way it is stopped.
    await assert.rejects(
      renderJinjaChat("{% for i in range(100000000) %}{% endfor %}", [{ role: "user", content: "hi" }], o),
      isCode("E_BAD_MODEL", /chat template (could not be rendered|did not finish rendering within)/),
    );
    assert.equal(await renderJinjaChat("{{ messages[0].content }}!", [{ role: "user", content: "hi" }], o), "hi!");
  });

  it("a thread count beyond GGML_MAX_N_THREADS (was: std::bad_alloc abort)", async () => {
    await assert.rejects(Engine.create({ gpu: "cpu", threads: 1_000_000 }), isCode("E_BAD_INPUT", /threads must be an integer in 1\.\.512/));
  });

  it("absurd batch sizes and contexts (was: a RangeError stack trace; a context size wrapped around 2^32)", async () => {
    const file = path.join(dir, "tiny.gguf");
    await writeFile(file, await writeSpec(await tinyModelSpec()));
    await using engine = await Engine.create({ gpu: "cpu", threads: 1 });
    const model = await engine.loadModel(file);
    const prompt = await model.tokenize("Hi");
    await assert.rejects(
      model.capture([{ tokens: prompt, promptLength: 1 }], { batchTokens: 2 ** 31 }),
      isCode("E_BAD_INPUT", /batchTokens must be at most 65536/),
    );
    await assert.rejects(model.generate([{ prompt }], { maxTokens: 2 ** 53 - 1 }), isCode("E_BAD_INPUT", /beyond llama\.cpp's 32-bit size/));
    const [r] = await model.generate([{ prompt }], { maxTokens: 2, temperature: 0 });
    assert.ok(r!.tokens.length >= 1);
  });

  it("a LoRA adapter whose adapter.lora.alpha is not a float32 (was: gguf_get_val_f32's type assert)", async () => {
    const model = path.join(dir, "tiny-for-lora.gguf");
    await writeFile(model, await writeSpec(await tinyModelSpec()));
    const good = loraAdapterSpec();
    const bad = loraAdapterSpec();
    Object.assign(bad.kv.find((e) => e.key === "adapter.lora.alpha")!, { type: GgufValueType.UINT8, value: 8 });
    await writeFile(path.join(dir, "good.gguf"), await writeSpec(good));
    await writeFile(path.join(dir, "bad.gguf"), await writeSpec(bad));
    await using engine = await Engine.create({ gpu: "cpu", threads: 1 });
    await (await engine.loadModel(model, { loras: [{ path: path.join(dir, "good.gguf") }] })).dispose();
    await assert.rejects(
      engine.loadModel(model, { loras: [{ path: path.join(dir, "bad.gguf") }] }),
      isCode("E_BAD_MODEL", /adapter\.lora\.alpha is not a float32/),
    );
  });

  it("a shard index whose weight_map names a shard by a non-string (was: TypeError shard.includes is not a function)", async () => {
    const ck = await writeTinyCheckpoint(path.join(dir, "hf-index"), "qwen2", { nEmbd: 32, nFf: 48 });
    const indexFile = path.join(ck.dir, "model.safetensors.index.json");
    const index = JSON.parse(await readFile(indexFile, "utf8")) as { weight_map: Record<string, unknown> };
    index.weight_map["model.norm.weight"] = 3;
    await writeFile(indexFile, JSON.stringify(index));
    await assert.rejects(convertHf(ck.dir, path.join(dir, "x.gguf")), isCode("E_BAD_FORMAT", /weight_map\.model\.norm\.weight is 3/));
    await writeFile(indexFile, "null");
    await assert.rejects(convertHf(ck.dir, path.join(dir, "x.gguf")), isCode("E_BAD_FORMAT", /no weight_map/));
  });

  it("a tokenizer id far past vocab_size (was: a token table of 1e9 entries, the process ran out of time and memory)", async () => {
    const ck = await writeTinyCheckpoint(path.join(dir, "hf-ids"), "qwen2", { nEmbd: 32, nFf: 48 });
    const tokFile = path.join(ck.dir, "tokenizer.json");
    const tok = JSON.parse(await readFile(tokFile, "utf8")) as { added_tokens: { id: number }[] };
    tok.added_tokens[0]!.id = 1e9;
    await writeFile(tokFile, JSON.stringify(tok));
    await assert.rejects(convertHf(ck.dir, path.join(dir, "x.gguf")), isCode("E_BAD_MODEL", /has id 1000000000, past config\.json vocab_size/));
  });

  it("a pre-tokenizer or post-processor sequence with a null step (was: TypeError reading 'type' of null)", async () => {
    const ck = await writeTinyCheckpoint(path.join(dir, "hf-pre"), "llama", { nEmbd: 32, nFf: 48 });
    const tokFile = path.join(ck.dir, "tokenizer.json");
    const tok = JSON.parse(await readFile(tokFile, "utf8")) as { pre_tokenizer: { pretokenizers: unknown }; post_processor: unknown };
    tok.post_processor = { type: "Sequence", processors: [null, 3] };
    tok.pre_tokenizer.pretokenizers = [null, ...(tok.pre_tokenizer.pretokenizers as unknown[])];
    await writeFile(tokFile, JSON.stringify(tok));
    await convertHf(ck.dir, path.join(dir, "pre.gguf"), { type: "f32" });
    tok.pre_tokenizer.pretokenizers = 7;
    await writeFile(tokFile, JSON.stringify(tok));
    await assert.rejects(convertHf(ck.dir, path.join(dir, "pre2.gguf")), isCode("E_BAD_FORMAT", /pretokenizers is not a list/));
  });
});

describe("fuzz regressions: judge replies", () => {
  const input = { question: "q", answer: "a", metric: { kind: "coherence" as const } };
  const http = { maxRetries: 0, timeoutMs: 2000 };

  it("malformed top_logprobs entries are left out, and logprobs above 0 (was: TypeError destructuring null, a NaN score)", async () => {
    const server = await startFakeLLMServer();
    try {
      const judge = new OpenAIJudge({ model: "m", baseURL: server.baseURL, apiKey: "k", httpOptions: http });
      const reply = chatCompletion("80", { "80": 0.9 }) as { choices: { logprobs: { content: { top_logprobs: unknown }[] } }[] };
      const top = reply.choices[0]!.logprobs.content[0]!;
      top.top_logprobs = [{ token: "80", logprob: -0.1 }, null, { token: 70, logprob: -0.1 }, { token: "60", logprob: null }, "50"];
      server.enqueue({ body: reply });
      assert.equal(await judge.score(input), 80);
      top.top_logprobs = "80";
      server.enqueue({ body: reply });
      assert.equal(await judge.score(input), 80, "no usable logprobs: the reply's text");
      top.top_logprobs = [{ token: "90", logprob: 1e300 }, { token: "10", logprob: -1e300 }];
      server.enqueue({ body: reply });
      assert.equal(await judge.score(input), 90);
      const text = new OpenAIJudge({ model: "m", baseURL: server.baseURL, apiKey: "k", httpOptions: http, mode: "text" });
      server.enqueue({ body: { choices: [{ message: { content: 5 } }] } });
      await assert.rejects(text.score(input), isCode("E_JUDGE", /message\.content that is not a string/));
    } finally {
      await server.close();
    }
  });

  it("a probability-weighted score of only 100s stays 100 (was: 100.00000000000001 from rounding)", () => {
    const score = scoreFromTopLogprobs([{ token: "100", logprob: -3 }, { token: "100", logprob: 0 }]);
    assert.equal(score, 100);
  });

  it("Anthropic content blocks that are not objects (was: TypeError reading 'type' of null)", async () => {
    const server = await startFakeLLMServer();
    try {
      const judge = new AnthropicJudge({ model: "m", baseURL: server.origin, apiKey: "k", httpOptions: http });
      const reply = anthropicMessage("80") as { content: unknown[] };
      reply.content.unshift(null, 5, "text");
      server.enqueue({ body: reply });
      assert.equal(await judge.score(input), 80);
    } finally {
      await server.close();
    }
  });
});

describe("fuzz regressions: hub answers", () => {
  const data = Uint8Array.from({ length: 100 }, (_, i) => i);
  const sha = createHash("sha256").update(data).digest("hex");
  const commit = "0123456789abcdef0123456789abcdef01234567";
  const ok = (body: string | Uint8Array, headers: Record<string, string> = {}, status = 200): PlannedReply => ({ status, headers, body, delivery: "whole" });

  async function pull(siblings: unknown[], location?: string, cdn: PlannedReply = ok(data)) {
    const server = await localServer();
    server.serve((req) => {
      if (req.url.pathname.startsWith("/api/")) return ok(JSON.stringify({ sha: commit, siblings }));
      if (req.url.pathname.includes("/resolve/")) return ok("", { location: location ?? `${server.origin}/cdn/${sha}`, "x-linked-etag": createHash("sha256").update(cdn.body).digest("hex") }, 302);
      return cdn;
    });
    const cacheDir = await mkdtemp(path.join(dir, "hub-"));
    return pullModel("fuzz/tiny", { env: { cacheDir, endpoint: server.origin, token: undefined, offline: false } });
  }
  const good = { rfilename: "tiny-Q4_K_M.gguf", size: data.length, lfs: { sha256: sha, size: data.length } };

  it("a listing with a null sibling (was: TypeError reading 'lfs' of null); a commit that is not a hash", async () => {
    assert.equal((await pull([null, 5, good])).commit, commit);
    const server = await localServer();
    server.serve(() => ok(JSON.stringify({ sha: "../../x", siblings: [good] })));
    await assert.rejects(
      pullModel("fuzz/tiny", { env: { cacheDir: path.join(dir, "hub-c"), endpoint: server.origin, token: undefined, offline: false } }),
      isCode("E_NETWORK", /gives the commit "\.\.\/\.\.\/x", not a 40-hex-digit hash/),
    );
  });

  it("a listed size below 0 (was: ENOENT unlinking a partial download that did not exist), names and etags that lead out of the cache", async () => {
    await assert.rejects(pull([{ ...good, size: -1, lfs: { sha256: sha, size: -1 } }]), isCode("E_NETWORK", /gives tiny-Q4_K_M\.gguf the size -1, not a byte count/));
    await assert.rejects(pull([{ ...good, rfilename: "../../../../escape-Q4_K_M.gguf" }]), isCode("E_NETWORK", /"\.\.\/\.\.\/\.\.\/\.\.\/escape-Q4_K_M\.gguf", which is not a plain relative path/));
    await assert.rejects(pull([{ ...good, lfs: { sha256: "../../../escape", size: data.length } }]), isCode("E_NETWORK", /blob id "\.\.\/\.\.\/\.\.\/escape", not a sha1 or sha256/));
  });

  it("a listed file of 0 bytes (was: ENOENT, no partial file was ever created), a transfer cut every time (was: TypeError terminated)", async () => {
    const empty = createHash("sha256").update(new Uint8Array(0)).digest("hex");
    const r = await pull([{ rfilename: "tiny-Q4_K_M.gguf", size: 0, lfs: { sha256: empty, size: 0 } }], undefined, ok(new Uint8Array(0)));
    assert.equal((await readFile(r.modelPath)).length, 0);
    await assert.rejects(pull([good], undefined, { ...ok(data), delivery: "truncate" }), isCode("E_NETWORK", /tiny-Q4_K_M\.gguf: the transfer broke off 6 times \(last: terminated\)/));
  });

  it("a redirect to an unparsable or non-http Location (was: TypeError Invalid URL)", async () => {
    await assert.rejects(pull([good], "http://["), isCode("E_NETWORK", /redirected .* to "http:\/\/\[", not an http\(s\) URL/));
    await assert.rejects(pull([good], "file:///etc/passwd"), isCode("E_NETWORK", /not an http\(s\) URL/));
  });
});
