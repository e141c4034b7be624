/**
 * `persona serve` over real HTTP with the real `openai` client: one server (the demo model, its
 * three traits) for the whole file, requests short and mostly greedy. Projections are checked
 * against the engine's own projection of the same prompt; steering against the same request
 * run alone.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import OpenAI from "openai";
import "../src/demo/register.js";
import { row } from "../src/vectors/format.js";
import { parseServerConfig } from "../src/server/config.js";
import { type RunningServer, startServer } from "../src/server/server.js";

const KEY = "test-key-0123456789";
let server: RunningServer;
let client: OpenAI;
const question = (content: string) => [{ role: "user" as const, content }];
const Q = question("How should I treat my neighbour?");

/** The `persona` extension the openai client passes through untouched. */
type Persona = Record<string, { layer: number; prompt_projection: number | null; response_projection: number | null; threshold: number | null; flagged: boolean; fired: string | null; action: string | null; trace?: number[] }>;
const personaOf = (x: unknown) => (x as { persona: Persona }).persona;

function post(path: string, body: unknown, opts: { key?: string | null; signal?: AbortSignal } = {}): Promise<Response> {
  const key = opts.key === undefined ? KEY : opts.key;
  return fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal: opts.signal,
  });
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

async function waitIdle(): Promise<void> {
  for (let i = 0; i < 200 && server.state.active > 0; i++) await new Promise((r) => setTimeout(r, 25));
  assert.equal(server.state.active, 0);
}

before(async () => {
  server = await startServer(parseServerConfig({ model: "demo", port: 0, threads: 1, apiKey: KEY, parallel: 3, queue: 1, ctx: 1024, limits: { messages: 8, maxTokens: 1000, bodyBytes: 4096 } }));
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: KEY, maxRetries: 0 });
});

after(async () => {
  await server?.close();
});

describe("OpenAI wire format", () => {
  it("lists the model with its served traits", async () => {
    const models = await client.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      ["persona-demo"],
    );
    assert.deepEqual((models.data[0] as unknown as { persona: { traits: string[] } }).persona.traits, ["evil", "hallucinating", "sycophantic"]);
  });

  it("answers a chat, and streams the same greedy reply with usage in a last chunk", async () => {
    const reply = await client.chat.completions.create({ model: "persona-demo", messages: Q, max_tokens: 16, temperature: 0 });
    const text = reply.choices[0]!.message.content!;
    assert.ok(text.length > 0);
    assert.equal(reply.usage!.total_tokens, reply.usage!.prompt_tokens + reply.usage!.completion_tokens);

    const stream = await client.chat.completions.create({ model: "persona-demo", messages: Q, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let streamed = "";
    const chunks = [];
    for await (const chunk of stream) {
      chunks.push(chunk);
      streamed += chunk.choices[0]?.delta.content ?? "";
    }
    assert.equal(streamed, text);
    const last = chunks[chunks.length - 1]!;
    assert.deepEqual(last.choices, []);
    assert.deepEqual(last.usage, reply.usage);
    // The prompt's projections come before the reply's first token.
    const early = chunks.findIndex((c) => (c as unknown as { persona?: Persona }).persona);
    assert.ok(early >= 0 && early < chunks.findIndex((c) => c.choices[0]?.delta.content), "projections before the first token");
    const finish = chunks[chunks.length - 2]!;
    assert.equal(personaOf(chunks[early]).evil!.prompt_projection, personaOf(finish).evil!.prompt_projection);
    assert.equal(personaOf(chunks[early]).evil!.response_projection, null);
    assert.equal(finish.choices[0]!.finish_reason, reply.choices[0]!.finish_reason);
    // The same numbers as the plain reply's, up to the float noise of a reused KV prefix.
    for (const [trait, r] of Object.entries(personaOf(reply))) {
      const f = personaOf(finish)[trait]!;
      for (const key of ["prompt_projection", "response_projection"] as const) assert.ok(Math.abs(f[key]! - r[key]!) < 1e-4 * (1 + Math.abs(r[key]!)), `${trait} ${key}`);
      assert.equal(f.flagged, r.flagged);
    }
  });

  it("serves /v1/completions, streamed and not", async () => {
    const c = await client.completions.create({ model: "persona-demo", prompt: "The garden was", max_tokens: 8, temperature: 0 });
    assert.ok(c.choices[0]!.text.length > 0);
    let streamed = "";
    for await (const chunk of await client.completions.create({ model: "persona-demo", prompt: "The garden was", max_tokens: 8, temperature: 0, stream: true })) {
      streamed += chunk.choices[0]?.text ?? "";
    }
    assert.equal(streamed, c.choices[0]!.text);
    assert.equal(typeof personaOf(c).evil!.prompt_projection, "number");
  });

  it("ends at a stop sequence without returning it", async () => {
    const full = (await client.chat.completions.create({ model: "persona-demo", messages: Q, max_tokens: 16, temperature: 0 })).choices[0]!.message.content!;
    const word = full.split(" ")[2]!;
    const cut = await client.chat.completions.create({ model: "persona-demo", messages: Q, max_tokens: 16, temperature: 0, stop: [` ${word}`] });
    assert.equal(cut.choices[0]!.message.content, full.slice(0, full.indexOf(` ${word}`)));
    assert.equal(cut.choices[0]!.finish_reason, "stop");
  });

  it("answers bad requests in OpenAI's error format", async () => {
    await assert.rejects(client.chat.completions.create({ model: "gpt-4", messages: Q }), (e: unknown) => e instanceof OpenAI.NotFoundError && /not served/.test(e.message));
    await assert.rejects(client.chat.completions.create({ model: "persona-demo", messages: Q, n: 2 }), OpenAI.BadRequestError);
    await assert.rejects(client.chat.completions.create({ model: "persona-demo", messages: Q, max_tokens: 5000 }), (e: unknown) => e instanceof OpenAI.BadRequestError && /limit of 1000/.test(e.message));
    // The prompt and max_tokens overflow a request's context (1024 tokens): a 400 before anything is streamed.
    const long = question("Tell me everything about the sea, the sky, the mountains and the rivers of the world, one by one and at length.");
    const tooLong = (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === "context_length_exceeded" && /needs \d+ tokens of context/.test(e.message);
    await assert.rejects(client.chat.completions.create({ model: "persona-demo", messages: long, max_tokens: 1000 }), tooLong);
    await assert.rejects(client.chat.completions.create({ model: "persona-demo", messages: long, max_tokens: 1000, stream: true }), tooLong);
    await assert.rejects(
      client.chat.completions.create({ model: "persona-demo", messages: Array.from({ length: 9 }, () => Q[0]!) }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && /at most 8 messages/.test(e.message),
    );
    const bad = await post("/v1/chat/completions", "{not json");
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { type: string } }).error.type, "invalid_request_error");
    const big = await post("/v1/chat/completions", { messages: question("x".repeat(5000)) });
    assert.equal(big.status, 413);
    const field = await post("/v1/chat/completions", { messages: [{ role: "user", content: 3 }] });
    assert.equal(((await field.json()) as { error: { param: string } }).error.param, "messages[0].content");
    const persona = await post("/v1/chat/completions", { messages: Q, persona: { monitor: ["grumpy"] } });
    assert.match(((await persona.json()) as { error: { message: string } }).error.message, /not served here \(served: evil, hallucinating, sycophantic\)/);
  });

  it("needs the API key (Bearer) on the API but not on /health", async () => {
    const none = await post("/v1/chat/completions", { messages: Q }, { key: null });
    assert.equal(none.status, 401);
    assert.equal(none.headers.get("www-authenticate"), "Bearer");
    await assert.rejects(new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "wrong", maxRetries: 0 }).models.list(), OpenAI.AuthenticationError);
    assert.equal((await fetch(`${server.url}/metrics`)).status, 401);
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
  });
});

describe("persona monitoring and steering", () => {
  it("reports each monitored trait's projections, equal to the engine's own projection of the prompt", async () => {
    const reply = await client.chat.completions.create({ model: "persona-demo", messages: Q, max_tokens: 12, temperature: 0, persona: { monitor: ["evil", "sycophantic"], trace: true } } as never);
    const persona = personaOf(reply);
    assert.deepEqual(Object.keys(persona), ["evil", "sycophantic"]);
    const { model, persona: service } = server.state;
    const traits = ["evil", "sycophantic"].map((t) => service.traits.get(t)!);
    const probes = model.probes(traits.map((t) => ({ layer: t.layer, vector: Float32Array.from(row(t.matrix, t.layer)) })));
    const prompt = await model.encodeChat(Q);
    const [direct] = await model.project([{ tokens: prompt, promptLength: prompt.length }], probes, { exact: false });
    traits.forEach((t, k) => {
      const r = persona[t.name]!;
      assert.ok(Math.abs(r.prompt_projection! - direct!.promptLast[k]!) < 1e-3 * (1 + Math.abs(direct!.promptLast[k]!)), `${t.name}: ${r.prompt_projection} vs ${direct!.promptLast[k]}`);
      assert.equal(r.flagged, false);
      // The trace holds the generated tokens that went back through the model; its mean is the response projection.
      const trace = r.trace!;
      assert.ok(trace.length >= reply.usage!.completion_tokens - 1 && trace.length <= reply.usage!.completion_tokens);
      const mean = trace.reduce((a, b) => a + b, 0) / trace.length;
      assert.ok(Math.abs(mean - r.response_projection!) < 1e-3 * (1 + Math.abs(mean)));
    });
  });

  it("flags and refuses when the last prompt token crosses a threshold, before generating", async () => {
    const plain = personaOf(await client.chat.completions.create({ model: "persona-demo", messages: Q, max_tokens: 4, temperature: 0, persona: { monitor: ["evil"] } } as never)).evil!;
    const below = plain.prompt_projection! - 0.5;
    const before = await metric("persona_tokens_total{kind=\"completion\"}");
    const refused = await client.chat.completions.create({ model: "persona-demo", messages: Q, max_tokens: 4, persona: { thresholds: { evil: below }, action: "refuse" } } as never);
    assert.equal(refused.choices[0]!.finish_reason, "content_filter");
    assert.equal(refused.choices[0]!.message.content, null);
    assert.match(refused.choices[0]!.message.refusal!, /refused.*evil/);
    assert.equal(refused.usage!.completion_tokens, 0);
    assert.equal(await metric("persona_tokens_total{kind=\"completion\"}"), before);
    const evil = personaOf(refused).evil!;
    assert.deepEqual([evil.flagged, evil.fired, evil.action, evil.threshold], [true, "prompt", "refuse", below]);

    const passed = await client.chat.completions.create({ model: "persona-demo", messages: Q, max_tokens: 4, temperature: 0, persona: { thresholds: { evil: below + 1 }, action: "refuse" } } as never);
    assert.equal(passed.choices[0]!.finish_reason === "content_filter", false);

    // Streamed, the refusal is a refusal delta then the finish chunk with the report.
    const chunks = [];
    const refusing = { model: "persona-demo", messages: Q, stream: true, persona: { thresholds: { evil: below }, action: "refuse" } } as OpenAI.ChatCompletionCreateParamsStreaming;
    for await (const c of await client.chat.completions.create(refusing)) chunks.push(c);
    assert.match(chunks.map((c) => c.choices[0]?.delta.refusal ?? "").join(""), /refused/);
    assert.equal(chunks[chunks.length - 1]!.choices[0]!.finish_reason, "content_filter");
    assert.equal(personaOf(chunks[chunks.length - 1]).evil!.flagged, true);
    assert.ok((await metric("persona_flagged_total{trait=\"evil\"}")) >= 2);
    assert.ok((await metric("persona_actions_total{action=\"refuse\"}")) >= 2);
  });

  it("applies the action's steering only when the threshold is crossed (conditional steering)", async () => {
    const ask = (persona: object) => client.chat.completions.create({ model: "persona-demo", messages: Q, max_tokens: 12, temperature: 0, persona } as never).then((r) => r);
    const steer = [{ trait: "evil", coef: 8 }];
    const plain = await ask({ monitor: ["evil"] });
    const steered = await ask({ monitor: ["evil"], steer });
    assert.notEqual(steered.choices[0]!.message.content, plain.choices[0]!.message.content);
    const p = personaOf(plain).evil!.prompt_projection!;
    const fired = await ask({ thresholds: { evil: p - 0.5 }, action: { type: "steer", steer } });
    assert.equal(fired.choices[0]!.message.content, steered.choices[0]!.message.content);
    assert.equal(personaOf(fired).evil!.action, "steer");
    // Above the plain reply's projection too: a flag also fires on the reply.
    const quiet = await ask({ thresholds: { evil: Math.max(p, personaOf(plain).evil!.response_projection!) + 0.5 }, action: { type: "steer", steer } });
    assert.equal(quiet.choices[0]!.message.content, plain.choices[0]!.message.content);
    assert.equal(personaOf(quiet).evil!.action, null);
  });

  it("caps the projection at the monitored layer: no row's projection stays above the threshold", async () => {
    const plain = personaOf(await client.chat.completions.create({ model: "persona-demo", messages: Q, max_tokens: 12, temperature: 0, persona: { monitor: ["evil"], trace: true } } as never)).evil!;
    const tau = Math.min(plain.prompt_projection!, ...plain.trace!) + 1;
    const capped = personaOf(
      await client.chat.completions.create({ model: "persona-demo", messages: Q, max_tokens: 12, temperature: 0, persona: { monitor: ["evil"], trace: true, steer: [{ trait: "evil", coef: tau, mode: "cap", positions: "all" }] } } as never),
    ).evil!;
    for (const x of [capped.prompt_projection!, ...capped.trace!]) assert.ok(x <= tau + 1e-3, `${x} > ${tau}`);
    assert.ok(Math.max(plain.prompt_projection!, ...plain.trace!) > tau, "the unsteered reply crosses the cap somewhere");
  });

  it("serves steered and unsteered requests side by side exactly as each alone (greedy)", async () => {
    const requests = [
      { messages: Q, persona: { monitor: ["evil"] } },
      { messages: question("Tell me about the moon."), persona: { steer: [{ trait: "evil", coef: 6 }] } },
      { messages: Q, persona: { steer: [{ trait: "sycophantic", coef: 3, mode: "ablate", positions: "all" }] } },
      { messages: question("Tell me about the moon."), persona: { steer: [{ trait: "evil", coef: 0, mode: "cap", positions: "all" }] } },
    ].map((r) => ({ model: "persona-demo", max_tokens: 12, temperature: 0, ...r }));
    const text = (r: OpenAI.ChatCompletion) => r.choices[0]!.message.content;
    const alone = [];
    for (const r of requests) alone.push(text(await client.chat.completions.create(r as never)));
    // Capacity is slots + queue; send no more at once than the server admits.
    const width = server.state.backend.slots + server.state.config.queue;
    const together: (string | null)[] = [];
    for (let i = 0; i < requests.length; i += width) {
      together.push(...(await Promise.all(requests.slice(i, i + width).map((r) => client.chat.completions.create(r as never).then(text)))));
    }
    assert.deepEqual(together, alone);
    assert.equal(new Set(alone).size > 1, true);
  });
});

describe("load and safety", () => {
  // A strong push keeps the demo model from ever ending its reply, so these run for their whole max_tokens.
  const endless = (maxTokens: number) => ({ messages: Q, max_tokens: maxTokens, temperature: 0, persona: { steer: [{ trait: "evil", coef: 30 }] } });

  it("answers 429 with Retry-After when the queue is full", async () => {
    const capacity = server.state.backend.slots + server.state.config.queue;
    // Streamed, so the admitted ones answer at once and are then cancelled by closing them.
    const controller = new AbortController();
    const responses = await Promise.all(Array.from({ length: capacity + 2 }, () => post("/v1/chat/completions", { ...endless(400), stream: true }, { signal: controller.signal })));
    const statuses = responses.map((r) => r.status).sort();
    assert.deepEqual(statuses, [...Array(capacity).fill(200), 429, 429]);
    const busy = responses.find((r) => r.status === 429)!;
    assert.ok(Number(busy.headers.get("retry-after")) >= 1);
    assert.equal(((await busy.json()) as { error: { type: string } }).error.type, "rate_limit_error");
    controller.abort();
    assert.equal(await metric("persona_queue_rejections_total"), 2);
    await waitIdle();
  });

  it("cancels a generation when its client disconnects", async () => {
    await waitIdle();
    const before = await metric("persona_cancelled_total");
    const controller = new AbortController();
    const started = performance.now();
    const res = await post("/v1/chat/completions", { ...endless(400), stream: true }, { signal: controller.signal });
    const reader = res.body!.getReader();
    await reader.read();
    await reader.read();
    controller.abort();
    await waitIdle();
    const cancelledAfter = performance.now() - started;
    assert.equal(await metric("persona_cancelled_total"), before + 1);
    // The full reply takes several times longer: time the same request to completion.
    const t = performance.now();
    await (await post("/v1/chat/completions", endless(400))).json();
    assert.ok(cancelledAfter < (performance.now() - t) / 2, `cancelled after ${cancelledAfter} ms`);
  });

  it("reports health and Prometheus metrics", async () => {
    const health = (await (await fetch(`${server.url}/health`)).json()) as { status: string; model: string; active: number; running: number; waiting: number };
    // Every request above has ended, however it ended (finished, refused, cancelled, rejected).
    assert.deepEqual([health.status, health.model, health.active, health.running, health.waiting], ["ok", "persona-demo", 0, 0, 0]);
    assert.ok((await metric("persona_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}")) > 5);
    assert.ok((await metric("persona_tokens_total{kind=\"prompt\"}")) > 0);
    assert.equal(await metric("persona_queue_depth"), 0);
  });
});
