/**
 * The HTTP layer (Hono): OpenAI's routes and error format, Bearer auth, body and token limits,
 * admission to a bounded queue, SSE streaming, plus /health, /metrics, the dashboard and its two
 * JSON feeds. Generation itself is run.ts over the backend; persona resolution is persona.ts.
 */
import { createHash, randomBytes, randomInt, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import type { HttpBindings } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { z } from "zod";
import type { Model } from "../engine/Model.js";
import type { ChatMessage, PromptText } from "../engine/types.js";
import { PersonaError, httpStatusOf } from "../errors.js";
import type { Backend } from "./backend.js";
import type { ServerConfig } from "./config.js";
import type { ServerMetrics } from "./metrics.js";
import type { PersonaReport, PersonaService, ResolvedPersona } from "./persona.js";
import { type RecentLog } from "./recent.js";
import { type RunEvent, runGeneration } from "./run.js";
import { SseWriter } from "./sse.js";
import { chatRequestSchema, completionRequestSchema, describeIssue, type ChatRequest, type CompletionRequest } from "./schema.js";

export interface ServerState {
  config: ServerConfig;
  model: Model;
  /** The id clients pass as `model` (the served file's name). */
  modelId: string;
  backend: Backend;
  persona: PersonaService;
  metrics: ServerMetrics;
  recent: RecentLog;
  /** Aborted when shutdown stops waiting for in-flight requests. */
  shutdown: AbortController;
  draining: boolean;
  /** Generation requests admitted and not finished. */
  active: number;
  /** Moving average of request seconds, for Retry-After. */
  avgSeconds: number;
}

/** Served by @hono/node-server: handlers reach Node's request and response. */
type ServerEnv = { Bindings: HttpBindings };

type ErrorType = "invalid_request_error" | "authentication_error" | "not_found_error" | "rate_limit_error" | "server_error";

class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType,
    readonly code: string | null = null,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

function errorTypeOf(status: number): ErrorType {
  if (status === 401) return "authentication_error";
  if (status === 404) return "not_found_error";
  if (status === 429) return "rate_limit_error";
  return status >= 500 ? "server_error" : "invalid_request_error";
}

function fromPersonaError(e: PersonaError): ApiError {
  const status = httpStatusOf(e.code);
  return new ApiError(status, e.message, errorTypeOf(status), e.code);
}

function errorResponse(c: Context, e: ApiError): Response {
  for (const [k, v] of Object.entries(e.headers)) c.header(k, v);
  return c.json({ error: { message: e.message, type: e.type, param: e.param, code: e.code } }, e.status as 400);
}

const DASHBOARD_HTML = readFileSync(new URL("../../src/server/dashboard.html", import.meta.url), "utf8");

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

export function createApp(state: ServerState): Hono<ServerEnv> {
  const { config, metrics } = state;
  const app = new Hono<ServerEnv>();
  const keyDigest = config.apiKey ? digest(config.apiKey) : null;

  app.onError((err, c) => {
    if (err instanceof ApiError) return errorResponse(c, err);
    if (err instanceof PersonaError) return errorResponse(c, fromPersonaError(err));
    console.error(err);
    return errorResponse(c, new ApiError(500, "internal server error", "server_error"));
  });
  app.notFound((c) => errorResponse(c, new ApiError(404, `no route ${c.req.method} ${c.req.path}`, "not_found_error")));

  app.use("*", async (c, next) => {
    await next();
    const endpoint = c.req.routePath === "*" ? "other" : c.req.routePath;
    metrics.requests.inc({ endpoint, status: String(c.res.status) });
  });

  // Everything but the dashboard page and the health check needs the key when one is set.
  const auth = async (c: Context, next: () => Promise<void>) => {
    if (keyDigest) {
      const header = c.req.header("authorization") ?? "";
      const given = header.startsWith("Bearer ") ? header.slice(7) : "";
      // Digests have one length, so the comparison's time does not depend on the key's.
      if (!timingSafeEqual(digest(given), keyDigest)) {
        throw new ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)", "authentication_error", "invalid_api_key", null, { "WWW-Authenticate": "Bearer" });
      }
    }
    await next();
  };
  app.use("/v1/*", auth);
  app.use("/metrics", auth);
  app.use("/persona/*", auth);
  const tooLarge = (c: Context) => errorResponse(c, new ApiError(413, `request body exceeds ${config.limits.bodyBytes} bytes`, "invalid_request_error", "request_too_large"));
  const chunkedLimit = bodyLimit({ maxSize: config.limits.bodyBytes, onError: tooLarge });
  // A declared length is checked from Node's headers: bodyLimit reads `c.req.raw.body`, which builds
  // a web Request and a web stream over the body for every request (and c.req.json() then reads
  // through them). A body without a length (chunked) goes through bodyLimit, which counts it.
  const limit = async (c: Context<ServerEnv>, next: () => Promise<void>) => {
    const { headers } = c.env.incoming;
    if (headers["content-length"] === undefined || headers["transfer-encoding"] !== undefined) return chunkedLimit(c, next);
    if (Number(headers["content-length"]) > config.limits.bodyBytes) return tooLarge(c);
    await next();
  };

  app.get("/", (c) => c.html(DASHBOARD_HTML));
  app.get("/health", (c) => c.json({ status: state.draining ? "draining" : "ok", model: state.modelId, active: state.active, ...state.backend.stats() }, state.draining ? 503 : 200));
  app.get("/metrics", async (c) => {
    const s = state.backend.stats();
    metrics.queueDepth.set(Math.max(0, state.active - s.running));
    metrics.inFlight.set(state.active);
    c.header("Content-Type", metrics.registry.contentType);
    return c.body(await metrics.registry.metrics());
  });

  app.get("/v1/models", (c) =>
    c.json({
      object: "list",
      data: [{ id: state.modelId, object: "model", created: 0, owned_by: "persona-vectors", persona: { traits: [...state.persona.traits.keys()] } }],
    }),
  );

  app.get("/persona/traits", (c) =>
    c.json({
      model: state.modelId,
      n_layer: state.model.info.nLayer,
      traits: [...state.persona.traits.values()].map((t) => ({ name: t.name, layer: t.layer })),
      monitor: state.persona.defaults.monitor,
      thresholds: state.persona.defaults.thresholds,
      action: state.persona.defaults.action.type,
    }),
  );
  app.get("/persona/recent", (c) => {
    const after = Number(c.req.query("after") ?? 0);
    return c.json({ requests: state.recent.after(Number.isFinite(after) ? after : 0) });
  });

  app.post("/v1/chat/completions", limit, async (c) => {
    const body = await parseBody(c, chatRequestSchema);
    if (body.messages.length > config.limits.messages) throw new ApiError(400, `at most ${config.limits.messages} messages per request`, "invalid_request_error", "too_many_messages", "messages");
    const messages: ChatMessage[] = body.messages.map((m) => ({
      role: m.role === "developer" ? "system" : m.role,
      content: typeof m.content === "string" ? m.content : (m.content ?? []).map((p) => p.text).join(""),
    }));
    const lastUser = [...messages].reverse().find((m) => m.role === "user")?.content ?? "";
    return generate(c, state, "/v1/chat/completions", body, () => state.model.chatPrompt(messages), lastUser, body.max_completion_tokens ?? body.max_tokens);
  });

  app.post("/v1/completions", limit, async (c) => {
    const body = await parseBody(c, completionRequestSchema);
    const text = typeof body.prompt === "string" ? body.prompt : body.prompt[0]!;
    if (text === "") throw new ApiError(400, "prompt is empty", "invalid_request_error", null, "prompt");
    const prompt: PromptText = { text, addSpecial: state.model.info.addBos, parseSpecial: true };
    return generate(c, state, "/v1/completions", body, async () => prompt, text, body.max_tokens);
  });

  return app;
}

async function parseBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  let json: unknown;
  try {
    json = await c.req.json();
  } catch {
    throw new ApiError(400, "the request body is not valid JSON", "invalid_request_error", "invalid_json");
  }
  const r = schema.safeParse(json);
  if (!r.success) {
    const { message, param } = describeIssue(r.error);
    throw new ApiError(400, message, "invalid_request_error", "invalid_request", param);
  }
  return r.data;
}

function newId(prefix: string): string {
  return `${prefix}-${randomBytes(12).toString("hex")}`;
}

type Endpoint = "/v1/chat/completions" | "/v1/completions";

/** Validation shared by both endpoints, admission, then the reply as JSON or as SSE. */
async function generate(
  c: Context<ServerEnv>,
  state: ServerState,
  endpoint: Endpoint,
  body: ChatRequest | CompletionRequest,
  /** The prompt as text: the engine tokenizes it as it takes the request. */
  render: () => Promise<PromptText>,
  promptText: string,
  maxTokensAsked: number | null | undefined,
): Promise<Response> {
  const { config, metrics } = state;
  if (body.model !== undefined && body.model !== state.modelId && body.model !== config.model) {
    throw new ApiError(404, `model "${body.model}" is not served here (this server serves ${state.modelId})`, "not_found_error", "model_not_found", "model");
  }
  const maxTokens = maxTokensAsked ?? config.defaultMaxTokens;
  if (maxTokens > config.limits.maxTokens) throw new ApiError(400, `max_tokens ${maxTokens} exceeds this server's limit of ${config.limits.maxTokens}`, "invalid_request_error", "max_tokens_too_large", "max_tokens");
  let persona: ResolvedPersona;
  try {
    persona = state.persona.resolve(body.persona);
  } catch (e) {
    if (e instanceof PersonaError) throw new ApiError(httpStatusOf(e.code) === 404 ? 404 : 400, `persona: ${e.message}`, errorTypeOf(httpStatusOf(e.code) === 404 ? 404 : 400), e.code, "persona");
    throw e;
  }

  if (state.draining) throw new ApiError(503, "the server is shutting down", "server_error", "shutting_down");
  const capacity = state.backend.slots + config.queue;
  if (state.active >= capacity) {
    metrics.rejected.inc();
    const retry = Math.min(60, Math.max(1, Math.ceil((state.avgSeconds * (state.active - state.backend.slots + 1)) / state.backend.slots)));
    throw new ApiError(429, `the server is busy (${state.active} requests in flight, queue of ${config.queue} full); retry later`, "rate_limit_error", "queue_full", null, { "Retry-After": String(retry) });
  }
  // Admitted before tokenizing: a request waiting for the tokenizer is already queued work.
  state.active++;
  const release = () => state.active--;
  const started = performance.now();
  let promptTokens: number;
  let events: AsyncGenerator<RunEvent>;
  try {
    const prompt = await render();
    const signal = AbortSignal.any([c.req.raw.signal, state.shutdown.signal]);
    const stop = body.stop == null ? [] : typeof body.stop === "string" ? [body.stop] : body.stop;
    events = runGeneration(
      state.backend,
      { prompt, temperature: body.temperature ?? 1, topP: body.top_p ?? 1, seed: body.seed ?? randomInt(2 ** 31), maxTokens, minTokens: body.ignore_eos ? maxTokens : 0, stop, persona },
      signal,
    );
    // Nothing is answered before the engine took the request: a prompt too long for the context is a 400.
    const first = await events.next();
    if (first.done || first.value.type !== "accepted") throw new PersonaError("E_INTERNAL", "generation did not start with its prompt's token count");
    promptTokens = first.value.promptTokens;
  } catch (e) {
    release();
    throw cancelledOr(state, e);
  }
  const id = newId(endpoint === "/v1/chat/completions" ? "chatcmpl" : "cmpl");
  const created = Math.floor(Date.now() / 1000);
  let firstText = true;
  const finish = (end: Extract<RunEvent, { type: "done" | "refused" }>) => {
    const seconds = (performance.now() - started) / 1000;
    state.avgSeconds = state.avgSeconds === 0 ? seconds : 0.9 * state.avgSeconds + 0.1 * seconds;
    metrics.latency.observe({ endpoint }, seconds);
    metrics.tokens.inc({ kind: "prompt" }, promptTokens);
    const completion = end.type === "done" ? end.completionTokens : 0;
    metrics.tokens.inc({ kind: "completion" }, completion);
    const flagged = Object.entries(end.persona).filter(([, r]) => r.flagged).map(([t]) => t);
    for (const t of flagged) metrics.flagged.inc({ trait: t });
    const action = end.type === "refused" ? "refuse" : end.action?.type === "steer" ? "steer" : null;
    if (action) metrics.actions.inc({ action });
    state.recent.add({
      id,
      created: Date.now(),
      endpoint,
      prompt: promptText,
      reply: end.type === "done" ? end.text : end.message,
      finish_reason: end.type === "done" ? end.finishReason : "content_filter",
      persona: end.persona,
      flagged,
      action,
      steer: persona.steerSummary,
      prompt_tokens: promptTokens,
      completion_tokens: completion,
      latency_ms: Math.round(seconds * 1000),
    });
    return completion;
  };
  const onText = () => {
    if (!firstText) return;
    firstText = false;
    metrics.firstToken.observe((performance.now() - started) / 1000);
  };
  const usage = (completion: number) => ({ prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion });
  const shape = endpoint === "/v1/chat/completions" ? chatShape : completionShape;

  if (!body.stream) {
    try {
      let text = "";
      for await (const e of events) {
        if (e.type === "prompt" || e.type === "accepted") continue;
        if (e.type === "text") {
          onText();
          text += e.text;
        } else {
          const completion = finish(e);
          return c.json({ id, object: shape.object, created, model: state.modelId, choices: [shape.choice(e, text)], usage: usage(completion), persona: e.persona });
        }
      }
      throw new PersonaError("E_INTERNAL", "generation ended without a result");
    } catch (e) {
      throw cancelledOr(state, e);
    } finally {
      release();
    }
  }

  const includeUsage = body.stream_options?.include_usage ?? false;
  const sse = new SseWriter(c.env.outgoing);
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    JSON.stringify({ id, object: shape.chunkObject, created, model: state.modelId, choices, ...extra });
  // A text chunk is the same JSON every time but for its text: built once, around a marker.
  const template = chunk([shape.delta("\0")]);
  const at = template.lastIndexOf('"\\u0000"');
  const [before, after] = [template.slice(0, at), template.slice(at + 8)];
  void (async () => {
    try {
      if (shape === chatShape) sse.send(chunk([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }]));
      for await (const e of events) {
        if (e.type === "accepted") continue;
        if (e.type === "prompt") {
          // The prompt's projections, before the reply's first token.
          sse.send(chunk([shape.delta("")], { persona: e.persona }));
          continue;
        }
        if (e.type === "text") {
          onText();
          sse.send(before + JSON.stringify(e.text) + after);
          if (sse.backlog) await sse.backlog;
          continue;
        }
        const completion = finish(e);
        if (e.type === "refused") sse.send(chunk([shape.refusalDelta(e.message)]));
        // The last chunk with a choice carries the persona report (and the usage chunk, when asked, follows it).
        sse.send(chunk([shape.finishDelta(e.type === "done" ? e.finishReason : "content_filter")], { persona: e.persona }));
        if (includeUsage) sse.send(chunk([], { usage: usage(completion) }));
      }
      sse.send("[DONE]");
    } catch (e) {
      const err = cancelledOr(state, e);
      // A client that left reads nothing more; one still there gets the error as a last event.
      if (!c.req.raw.signal.aborted) {
        const api = err instanceof ApiError ? err : new ApiError(500, "internal server error", "server_error");
        sse.send(JSON.stringify({ error: { message: api.message, type: api.type, param: api.param, code: api.code } }));
      }
    } finally {
      release();
      sse.end();
    }
  })();
  return RESPONSE_ALREADY_SENT;
}

/** An engine error as the API's: a cancelled generation (the client left, nobody reads the answer, or the server is shutting down), a prompt too long. */
function cancelledOr(state: ServerState, e: unknown): unknown {
  if (e instanceof PersonaError && e.code === "E_ABORTED") {
    state.metrics.cancelled.inc();
    return new ApiError(503, "the request was cancelled (client disconnect or server shutdown)", "server_error", "cancelled");
  }
  if (e instanceof PersonaError && e.code === "E_TOO_LONG") return new ApiError(400, e.message, "invalid_request_error", "context_length_exceeded", "messages");
  if (e instanceof PersonaError && !(e instanceof ApiError)) return fromPersonaError(e);
  return e;
}

type Ended = Extract<RunEvent, { type: "done" | "refused" }>;

/** How one endpoint writes its reply object and stream chunks. */
interface WireShape {
  object: string;
  chunkObject: string;
  choice(e: Ended, text: string): object;
  delta(text: string): object;
  refusalDelta(message: string): object;
  finishDelta(reason: string): object;
}

const chatShape: WireShape = {
  object: "chat.completion",
  chunkObject: "chat.completion.chunk",
  choice: (e: Ended, text: string) =>
    e.type === "refused"
      ? { index: 0, message: { role: "assistant", content: null, refusal: e.message }, finish_reason: "content_filter", logprobs: null }
      : { index: 0, message: { role: "assistant", content: text, refusal: null }, finish_reason: e.finishReason, logprobs: null },
  delta: (text: string) => ({ index: 0, delta: { content: text }, finish_reason: null }),
  refusalDelta: (message: string) => ({ index: 0, delta: { refusal: message }, finish_reason: null }),
  finishDelta: (reason: string) => ({ index: 0, delta: {}, finish_reason: reason }),
};

const completionShape: WireShape = {
  object: "text_completion",
  chunkObject: "text_completion",
  choice: (e, text) =>
    e.type === "refused"
      ? { index: 0, text: "", refusal: e.message, finish_reason: "content_filter", logprobs: null }
      : { index: 0, text, finish_reason: e.finishReason, logprobs: null },
  delta: (text) => ({ index: 0, text, finish_reason: null, logprobs: null }),
  refusalDelta: (message) => ({ index: 0, text: "", refusal: message, finish_reason: null, logprobs: null }),
  finishDelta: (reason) => ({ index: 0, text: "", finish_reason: reason, logprobs: null }),
};

export type { PersonaReport };
