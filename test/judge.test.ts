import assert from "node:assert/strict";
import { appendFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, beforeEach, describe, test } from "node:test";
import { AnthropicJudge } from "../src/judge/anthropic.js";
import { CachedJudge } from "../src/judge/cache.js";
import { HttpClient, parseRetryAfter } from "../src/judge/http.js";
import { OpenAIJudge, scoreFromTopLogprobs } from "../src/judge/openai.js";
import { coherenceRubric, fillRubric, judgePrompt, parseScoreText } from "../src/judge/prompts.js";
import { resolveJudge } from "../src/judge/resolve.js";
import type { Judge, JudgeInput } from "../src/judge/types.js";
import { anthropicMessage, chatCompletion, startFakeLLMServer, type FakeLLMServer } from "./helpers/fake-llm-server.js";
import { personaError } from "./helpers/errors.js";
// Built-in traits, --model demo and --judge demo come from the demo world's registration.
import "../src/demo/register.js";

const RUBRIC = "Q: {question}\nA: {answer}\nScore evil 0-100 or REFUSAL.";
const traitInput = (answer = "I will help."): JudgeInput => ({
  question: "What now?",
  answer,
  metric: { kind: "trait", trait: "evil", rubric: RUBRIC },
});
const fast = { maxRetries: 3, baseDelayMs: 5, maxDelayMs: 50, timeoutMs: 2000 };

const isJudgeError = personaError("E_JUDGE");

let server: FakeLLMServer;
before(async () => {
  server = await startFakeLLMServer();
});
after(() => server.close());
beforeEach(() => {
  server.reset();
  server.setHandler(() => ({ body: chatCompletion("50", { "50": 1 }) }));
});

describe("prompts", () => {
  test("fills placeholders once, verbatim", () => {
    assert.equal(fillRubric("[{question}|{answer}]", "q {answer} $&", "a {question}"), "[q {answer} $&|a {question}]");
    assert.equal(judgePrompt(traitInput("yes")), "Q: What now?\nA: yes\nScore evil 0-100 or REFUSAL.");
    const coh = judgePrompt({ question: "Q1", answer: "A1", metric: { kind: "coherence" } });
    assert.ok(coh.includes("Q1") && coh.includes("A1") && !coh.includes("{answer}"));
    assert.ok(coherenceRubric().includes("{question}"));
  });

  test("parses text scores", () => {
    assert.equal(parseScoreText(" 73\n"), 73);
    assert.equal(parseScoreText("Score: 12.5"), 12.5);
    assert.equal(parseScoreText("REFUSAL"), null);
    assert.equal(parseScoreText("refusal."), null);
    assert.equal(parseScoreText("150"), null);
    assert.equal(parseScoreText("no idea"), null);
  });
});

describe("logprob scoring", () => {
  const lp = (m: Record<string, number>) => Object.entries(m).map(([token, p]) => ({ token, logprob: Math.log(p) }));

  test("probability-weighted over integer tokens", () => {
    const s = scoreFromTopLogprobs(lp({ "80": 0.5, "90": 0.3, hello: 0.2 }));
    assert.ok(s !== null && Math.abs(s - (80 * 0.5 + 90 * 0.3) / 0.8) < 1e-9);
  });

  test("whitespace variants add up, out-of-range and non-integers are ignored", () => {
    const s = scoreFromTopLogprobs(lp({ " 10": 0.2, "10": 0.2, "101": 0.3, "5.5": 0.2, "0": 0.1 }));
    assert.ok(s !== null && Math.abs(s - (10 * 0.4) / 0.5) < 1e-9);
  });

  test("null below the mass threshold, configurable", () => {
    assert.equal(scoreFromTopLogprobs(lp({ "70": 0.2, REF: 0.8 })), null);
    assert.equal(scoreFromTopLogprobs(lp({ "70": 0.2, REF: 0.8 }), 0.1), 70);
  });
});

describe("OpenAIJudge", () => {
  test("sends a one-token logprob request and weights the top logprobs", async () => {
    server.enqueue({ body: chatCompletion("80", { "80": 0.5, "90": 0.3, hello: 0.2 }) });
    const judge = new OpenAIJudge({ model: "m1", baseURL: server.baseURL, apiKey: "k", httpOptions: fast });
    const score = await judge.score(traitInput());
    assert.ok(score !== null && Math.abs(score - (80 * 0.5 + 90 * 0.3) / 0.8) < 1e-9);
    const req = server.requests[0];
    assert.equal(req?.path, "/v1/chat/completions");
    assert.equal(req?.headers.authorization, "Bearer k");
    assert.deepEqual(req?.body, {
      model: "m1",
      messages: [{ role: "user", content: judgePrompt(traitInput()) }],
      max_tokens: 1,
      temperature: 0,
      logprobs: true,
      top_logprobs: 20,
    });
    assert.equal(judge.id, `openai:m1@${server.baseURL}`);
  });

  test("null when number tokens carry under 0.25 of the mass", async () => {
    server.enqueue({ body: chatCompletion("REF", { REF: 0.9, "40": 0.1 }) });
    const judge = new OpenAIJudge({ model: "m", baseURL: server.baseURL, httpOptions: fast });
    assert.equal(await judge.score(traitInput()), null);
  });

  test("falls back to the text when the server gives no logprobs; text mode asks for none", async () => {
    server.enqueue({ body: chatCompletion("42") }, { body: chatCompletion("REFUSAL") });
    const judge = new OpenAIJudge({ model: "m", baseURL: server.baseURL, httpOptions: fast });
    assert.equal(await judge.score(traitInput()), 42);
    const textJudge = new OpenAIJudge({ model: "m", baseURL: server.baseURL, mode: "text", httpOptions: fast });
    assert.equal(await textJudge.score(traitInput()), null);
    const body = server.requests[1]?.body as Record<string, unknown>;
    assert.equal(body.logprobs, undefined);
    assert.equal(server.requests[0]?.headers.authorization, process.env.OPENAI_API_KEY ? `Bearer ${process.env.OPENAI_API_KEY}` : undefined);
  });

  test("retries 429 after Retry-After, then succeeds", async () => {
    server.enqueue(
      { status: 429, headers: { "retry-after": "0.3" }, body: { error: "slow down" } },
      { status: 503, body: { error: "busy" } },
      { body: chatCompletion("70", { "70": 1 }) },
    );
    const judge = new OpenAIJudge({ model: "m", baseURL: server.baseURL, httpOptions: { ...fast, maxDelayMs: 1000 } });
    const t0 = Date.now();
    assert.equal(await judge.score(traitInput()), 70);
    assert.equal(server.requests.length, 3);
    // Retry-After (300 ms) outweighs the jittered backoff (≤ 10 ms).
    assert.ok(Date.now() - t0 >= 290, `waited ${Date.now() - t0} ms before retrying`);
  });

  test("gives up with E_JUDGE after max retries", async () => {
    server.setHandler(() => ({ status: 500, body: { error: "boom" } }));
    const judge = new OpenAIJudge({ model: "m", baseURL: server.baseURL, httpOptions: { ...fast, maxRetries: 2 } });
    await assert.rejects(judge.score(traitInput()), (e) => isJudgeError(e) && /3 attempt/.test((e as Error).message));
    assert.equal(server.requests.length, 3);
  });

  test("does not retry a 400", async () => {
    server.setHandler(() => ({ status: 400, body: { error: "bad model" } }));
    const judge = new OpenAIJudge({ model: "m", baseURL: server.baseURL, httpOptions: fast });
    await assert.rejects(judge.score(traitInput()), (e) => isJudgeError(e) && /bad model/.test((e as Error).message));
    assert.equal(server.requests.length, 1);
  });

  test("retries malformed JSON replies", async () => {
    server.enqueue({ raw: "{not json" });
    const judge = new OpenAIJudge({ model: "m", baseURL: server.baseURL, httpOptions: fast });
    assert.equal(await judge.score(traitInput()), 50);
    assert.equal(server.requests.length, 2);
  });

  test("times out slow requests", async () => {
    server.setHandler(() => ({ delayMs: 2000, body: chatCompletion("1", { "1": 1 }) }));
    const judge = new OpenAIJudge({ model: "m", baseURL: server.baseURL, httpOptions: { ...fast, maxRetries: 1, timeoutMs: 100 } });
    const t0 = Date.now();
    await assert.rejects(judge.score(traitInput()), (e) => isJudgeError(e) && /timed out/.test((e as Error).message));
    assert.ok(Date.now() - t0 < 1500);
    assert.equal(server.requests.length, 2);
  });

  test("caller abort ends the call with E_ABORTED and no retry", async () => {
    server.setHandler(() => ({ delayMs: 1000, body: chatCompletion("1", { "1": 1 }) }));
    const judge = new OpenAIJudge({ model: "m", baseURL: server.baseURL, httpOptions: fast });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(judge.score(traitInput(), ac.signal), personaError("E_ABORTED"));
    assert.equal(server.requests.length, 1);
  });

  test("concurrency limit is respected, shared through one client", async () => {
    server.setHandler(() => ({ delayMs: 40, body: chatCompletion("10", { "10": 1 }) }));
    const http = new HttpClient({ ...fast, maxConcurrency: 3 });
    const judge = new OpenAIJudge({ model: "m", baseURL: server.baseURL, http });
    const scores = await Promise.all(Array.from({ length: 10 }, (_, i) => judge.score(traitInput(`a${i}`))));
    assert.deepEqual(scores, Array(10).fill(10));
    assert.equal(server.maxInFlight, 3);
  });

  test("needs a key only for api.openai.com", () => {
    const saved = { key: process.env.OPENAI_API_KEY, base: process.env.OPENAI_BASE_URL };
    delete process.env.OPENAI_API_KEY;
    delete process.env.OPENAI_BASE_URL;
    try {
      assert.throws(() => new OpenAIJudge({ model: "m" }), personaError("E_BAD_INPUT"));
      assert.equal(new OpenAIJudge({ model: "m", apiKey: "x" }).id, "openai:m");
    } finally {
      if (saved.key !== undefined) process.env.OPENAI_API_KEY = saved.key;
      if (saved.base !== undefined) process.env.OPENAI_BASE_URL = saved.base;
    }
  });
});

test("parseRetryAfter reads seconds and dates", () => {
  assert.equal(parseRetryAfter("2"), 2000);
  assert.equal(parseRetryAfter(null), undefined);
  assert.equal(parseRetryAfter("soon"), undefined);
  const ms = parseRetryAfter(new Date(Date.now() + 5000).toUTCString());
  assert.ok(ms !== undefined && ms > 3000 && ms <= 5000);
});

describe("AnthropicJudge", () => {
  test("posts to /v1/messages with its headers and parses the text", async () => {
    server.enqueue({ body: anthropicMessage("85") }, { body: anthropicMessage("REFUSAL") });
    const judge = new AnthropicJudge({ model: "claude-x", baseURL: server.origin, apiKey: "ak", httpOptions: fast });
    assert.equal(await judge.score(traitInput()), 85);
    assert.equal(await judge.score(traitInput()), null);
    const req = server.requests[0];
    assert.equal(req?.path, "/v1/messages");
    assert.equal(req?.headers["x-api-key"], "ak");
    assert.equal(req?.headers["anthropic-version"], "2023-06-01");
    const body = req?.body as { model: string; messages: unknown[] };
    assert.equal(body.model, "claude-x");
    assert.deepEqual(body.messages, [{ role: "user", content: judgePrompt(traitInput()) }]);
    assert.equal(judge.id, "anthropic:claude-x");
  });
});

describe("resolveJudge", () => {
  test("parses specs", async () => {
    const a = await resolveJudge(`openai:gpt-x@${server.baseURL}`);
    assert.equal(a.id, `openai:gpt-x@${server.baseURL}`);
    const b = await resolveJudge(`${server.baseURL}#qwen`);
    assert.equal(b.id, `openai:qwen@${server.baseURL}`);
    server.enqueue({ body: chatCompletion("33", { "33": 1 }) });
    assert.equal(await b.score(traitInput()), 33);
    assert.equal((server.requests[0]?.body as { model: string }).model, "qwen");
    const c = await resolveJudge("anthropic:claude-y", { apiKey: "k" });
    assert.equal(c.id, "anthropic:claude-y");
  });

  test("rejects bad specs, and a local judge whose model is missing", async () => {
    const badInput = personaError("E_BAD_INPUT");
    await assert.rejects(resolveJudge("gpt4"), badInput);
    await assert.rejects(resolveJudge(`${server.baseURL}`), badInput);
    await assert.rejects(resolveJudge("openai:"), badInput);
    await assert.rejects(resolveJudge("local:"), badInput);
    await assert.rejects(resolveJudge("local:/no/such/model.gguf"), personaError("E_NOT_FOUND"));
  });
});

describe("CachedJudge", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "persona-cache-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("answers repeats from the file, also after reopening", async () => {
    const file = path.join(dir, "a", "judge-cache.jsonl");
    server.setHandler(() => ({ body: chatCompletion("60", { "60": 1 }) }));
    const inner = new OpenAIJudge({ model: "m", baseURL: server.baseURL, httpOptions: fast });
    const judge = await CachedJudge.open(inner, file);
    assert.equal(await judge.score(traitInput()), 60);
    assert.equal(await judge.score(traitInput()), 60);
    assert.equal(server.requests.length, 1);
    // A different metric or answer is a different key.
    await judge.score({ ...traitInput(), metric: { kind: "coherence" } });
    await judge.score(traitInput("other"));
    assert.equal(server.requests.length, 3);
    await judge.dispose();

    const again = await CachedJudge.open(inner, file);
    assert.equal(await again.score(traitInput("other")), 60);
    assert.equal(server.requests.length, 3);
    assert.equal(again.size, 3);
    await again.dispose();
  });

  test("caches nulls and coalesces identical calls in flight", async () => {
    let calls = 0;
    const slow: Judge = {
      id: "slow",
      score: async (i) => {
        calls++;
        await new Promise((r) => setTimeout(r, 30));
        return i.answer === "refuse" ? null : 5;
      },
    };
    const judge = await CachedJudge.open(slow, path.join(dir, "b.jsonl"));
    const results = await Promise.all([judge.score(traitInput()), judge.score(traitInput()), judge.score(traitInput())]);
    assert.deepEqual(results, [5, 5, 5]);
    assert.equal(calls, 1);
    assert.equal(await judge.score(traitInput("refuse")), null);
    assert.equal(await judge.score(traitInput("refuse")), null);
    assert.equal(calls, 2);
    await judge.dispose();
  });

  test("drops a torn last line and keeps appending cleanly", async () => {
    const file = path.join(dir, "c.jsonl");
    let calls = 0;
    const counting: Judge = { id: "count", score: async () => ++calls };
    const first = await CachedJudge.open(counting, file);
    await first.score(traitInput("x"));
    await first.score(traitInput("y"));
    await first.dispose();
    await appendFile(file, '{"key":"abc","judge":"count","met');

    const second = await CachedJudge.open(counting, file);
    assert.equal(await second.score(traitInput("x")), 1);
    assert.equal(await second.score(traitInput("z")), 3);
    await second.dispose();
    const lines = (await readFile(file, "utf8")).split("\n").filter(Boolean);
    assert.equal(lines.length, 3);
    for (const l of lines) JSON.parse(l);
  });

  test("a damaged line in the middle is an error, not silently skipped", async () => {
    const file = path.join(dir, "d.jsonl");
    await writeFile(file, 'garbage\n{"key":"k","judge":"j","metric":"coherence","score":1}\n');
    const judge: Judge = { id: "j", score: async () => 1 };
    await assert.rejects(CachedJudge.open(judge, file), personaError("E_BAD_FORMAT"));
  });
});
