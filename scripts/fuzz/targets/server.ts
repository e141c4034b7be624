/**
 * What a client can send to `persona serve`: OpenAI chat and completion bodies (messages, roles,
 * content parts, sampling fields, stop, streaming, the `persona` field's monitor, steering by
 * trait or raw vector with add/ablate/cap, thresholds, action and trace), invalid JSON, empty and
 * oversized bodies, wrong content types, auth headers, odd paths and methods. Each case goes over
 * real HTTP to the child's one server (startServer: the Node adapter, the demo model, its three
 * traits, max_tokens capped at 4); some streamed replies are abandoned after the first chunk. A
 * reply must be a 2xx (a streamed one without an error event) or a 4xx in OpenAI's error format;
 * anything else, or a request slot left busy, is a failure.
 */
import "../../../src/demo/register.js";
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { PersonaError } from "../../../src/errors.js";
import { parseServerConfig } from "../../../src/server/config.js";
import { type RunningServer, startServer } from "../../../src/server/server.js";
import { applySome, interestingNumber, mutateJson, mutateBytes, nastyString } from "../mutate.js";
import { type FuzzCase, type Target, UnexpectedError } from "../target.js";
import { capStrings } from "./jsonl.js";

const KEY = "fuzz-key-0123456789";
/** The demo model's shape (persona-demo.gguf): raw steering vectors of this width are valid. */
const DEMO_LAYERS = 4;
const DEMO_EMBD = 192;
const TRAITS = ["evil", "hallucinating", "sycophantic"];
const BODY_BYTES = 16384;

interface HttpCase {
  method: string;
  path: string;
  headers: Record<string, string>;
  /** Text, or base64 bytes when damaged. */
  body?: string;
  bodyBase64?: string;
  /** Abandon the reply after its first chunk (a client that leaves mid-stream). */
  abandon: boolean;
  /** Copies sent at once: the batch decodes them together, and past the queue they get 429. */
  copies: number;
}

/** Whether this case may use values the server must refuse; the others keep every field valid, so they reach generation. */
let wild = true;
const odd = (rng: Rng, p: number) => wild && rng.chance(p);

let server: Promise<RunningServer> | undefined;
function fuzzServer(): Promise<RunningServer> {
  server ??= startServer(
    parseServerConfig({ model: "demo", port: 0, threads: 1, apiKey: KEY, parallel: 2, queue: 4, ctx: 256, defaultMaxTokens: 2, limits: { messages: 8, maxTokens: 4, bodyBytes: BODY_BYTES } }),
  );
  return server;
}

function layer(rng: Rng): unknown {
  return !odd(rng, 0.2) ? 1 + rng.int(DEMO_LAYERS) : rng.pick<unknown>([0, -1, DEMO_LAYERS + 1, 1.5, interestingNumber(rng), "2", null]);
}

function coef(rng: Rng): unknown {
  return !odd(rng, 0.15) ? rng.pick([0, 1, -2, 0.5, 4, rng.next() * 20 - 10]) : rng.pick<unknown>([interestingNumber(rng), "1", null]);
}

function steerItem(rng: Rng): Record<string, unknown> {
  const item: Record<string, unknown> = rng.chance(0.75) ? { trait: !odd(rng, 0.1) ? rng.pick(TRAITS) : nastyString(rng).slice(0, 200) } : { vectors: vector(rng) };
  if (rng.chance(0.7) || (item.vectors && !wild)) item.layer = layer(rng);
  item.coef = coef(rng);
  if (rng.chance(0.6)) item.mode = odd(rng, 0.2) ? rng.pick(["Add", ""]) : rng.pick(["add", "ablate", "cap"]);
  if (rng.chance(0.4)) item.bound = odd(rng, 0.2) ? "both" : rng.pick(["max", "min"]);
  if (rng.chance(0.4)) item.positions = odd(rng, 0.2) ? "none" : rng.pick(["all", "prompt", "response"]);
  return item;
}

function vector(rng: Rng): unknown[] {
  const n = !odd(rng, 0.3) ? DEMO_EMBD : rng.pick([0, 1, DEMO_EMBD - 1, DEMO_EMBD + 1, 2 * DEMO_EMBD]);
  const zero = rng.chance(0.1);
  const big = odd(rng, 0.2);
  return Array.from({ length: n }, () => (zero ? 0 : big && rng.chance(0.1) ? rng.pick([1e308, -1e308, 3.5e38, 1e-45]) : Math.round((rng.next() * 2 - 1) * 1000) / 1000));
}

function personaField(rng: Rng): Record<string, unknown> {
  const p: Record<string, unknown> = {};
  if (rng.chance(0.5)) p.monitor = Array.from({ length: rng.int(4) }, () => (!odd(rng, 0.1) ? rng.pick(TRAITS) : nastyString(rng).slice(0, 100)));
  if (rng.chance(0.6)) p.steer = Array.from({ length: 1 + rng.int(3) }, () => steerItem(rng));
  if (rng.chance(0.4)) p.thresholds = Object.fromEntries(Array.from({ length: 1 + rng.int(2) }, () => [!odd(rng, 0.1) ? rng.pick(TRAITS) : "nope", !odd(rng, 0.1) ? rng.next() * 4 - 2 : interestingNumber(rng)]));
  if (rng.chance(0.4)) {
    const type = rng.pick(["report", "steer", "refuse"]);
    p.action = rng.chance(0.5) && (type !== "steer" || wild) ? type : { type, ...((type === "steer" && !wild) || rng.chance(0.6) ? { steer: [steerItem(rng)] } : {}) };
  }
  if (rng.chance(0.4)) p.trace = !odd(rng, 0.1) ? true : "yes";
  return p;
}

function message(rng: Rng, role: string): Record<string, unknown> {
  const text = !odd(rng, 0.2) ? rng.pick(["Hello", "How should I treat my neighbour?", "Tell me a secret.", "ok"]) : nastyString(rng).slice(0, 600);
  const content = rng.chance(0.8) ? text : !odd(rng, 0.3) ? [{ type: "text", text }, ...(rng.chance(0.3) ? [{ type: "text", text: "!" }] : [])] : rng.pick<unknown>([null, [{ type: "image_url", image_url: { url: "x" } }], []]);
  return { role, content };
}

function chatBody(rng: Rng): Record<string, unknown> {
  const roles = !odd(rng, 0.3) ? ["user"] : rng.pick([["system", "user"], ["developer", "user"], ["user", "assistant", "user"], ["assistant"], ["system"], ["tool", "user"], ["user", "assistant"]]);
  return { model: !odd(rng, 0.2) ? "persona-demo" : rng.pick(["demo", "gpt-4o", ""]), messages: roles.map((r) => message(rng, r)), ...sampling(rng) };
}

function completionBody(rng: Rng): Record<string, unknown> {
  const prompt = rng.chance(0.8) ? "Once upon a time" : nastyString(rng).slice(0, 600);
  return { model: "persona-demo", prompt: rng.chance(0.8) ? prompt : [prompt], ...sampling(rng) };
}

function sampling(rng: Rng): Record<string, unknown> {
  const b: Record<string, unknown> = { max_tokens: !odd(rng, 0.15) ? 1 + rng.int(4) : rng.pick<unknown>([0, 5, 2048, -1, 1.5, null, interestingNumber(rng)]) };
  if (rng.chance(0.5)) b.temperature = !odd(rng, 0.15) ? rng.pick([0, 0.7, 1, 2]) : rng.pick<unknown>([-1, 3, NaN, "0"]);
  if (rng.chance(0.2)) b.top_p = odd(rng, 0.5) ? rng.pick([0, 1.1]) : rng.pick([1, 0.5]);
  if (rng.chance(0.2)) b.seed = odd(rng, 0.5) ? rng.pick([2 ** 53, 1.5]) : rng.pick([0, 42, -1]);
  if (rng.chance(0.15)) b.n = odd(rng, 0.5) ? rng.pick([2, 0]) : rng.pick([1, null]);
  if (rng.chance(0.3)) b.stop = odd(rng, 0.3) ? ["a", "b", "c", "d", "e"] : rng.pick<unknown>(["\n", ["a", "b"], [], "", [""], null, nastyString(rng).slice(0, 50)]);
  if (rng.chance(0.4)) b.stream = !odd(rng, 0.1) ? true : "true";
  if (rng.chance(0.25)) b.stream_options = odd(rng, 0.2) ? { include_usage: 1 } : rng.pick<unknown>([{ include_usage: true }, { include_usage: false }, {}, null]);
  if (rng.chance(0.15)) b.logprobs = rng.pick<unknown>([true, false, null]);
  if (rng.chance(0.1)) b.top_logprobs = rng.pick([0, 5, 21]);
  if (rng.chance(0.1)) b.ignore_eos = rng.pick<unknown>([true, false]);
  if (rng.chance(0.1)) b.max_completion_tokens = odd(rng, 0.3) ? 9999 : rng.pick([1, 3]);
  if (rng.chance(0.1)) b[rng.pick(["presence_penalty", "frequency_penalty"])] = odd(rng, 0.5) ? 0.5 : 0;
  if (rng.chance(0.1)) b.user = nastyString(rng).slice(0, 100);
  if (rng.chance(0.55)) b.persona = personaField(rng);
  return b;
}

function requestCase(rng: Rng): { c: HttpCase; notes: string[] } {
  wild = rng.chance(0.6);
  const notes: string[] = [wild ? "odd values" : "valid values"];
  const headers: Record<string, string> = { "content-type": "application/json", authorization: `Bearer ${KEY}` };
  if (odd(rng, 0.15)) {
    const auth = rng.pick([undefined, `Bearer wrong-key-000000`, KEY, `bearer ${KEY}`, "Bearer ", `Basic ${KEY}`, `Bearer ${KEY} `]);
    if (auth === undefined) delete headers.authorization;
    else headers.authorization = auth;
    notes.push(`authorization ${JSON.stringify(auth)}`);
  }
  if (odd(rng, 0.15)) {
    const type = rng.pick([undefined, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=latin1", "application/json;;"]);
    if (type === undefined) delete headers["content-type"];
    else headers["content-type"] = type;
    notes.push(`content-type ${JSON.stringify(type)}`);
  }
  if (rng.chance(0.08)) {
    const path = rng.pick(["/health", "/v1/models", "/metrics", "/persona/traits", `/persona/recent?after=${rng.pick(["0", "-1", "abc", "1e400", "9999999999999"])}`, "/", "/v1/nope", "/v1/chat/completions/", "/%ff", "/v1/../health", "/v1/embeddings"]);
    const method = rng.pick(["GET", "GET", "POST", "DELETE", "PUT", "OPTIONS", "HEAD"]);
    notes.push(`${method} ${path}`);
    return { c: { method, path, headers, abandon: false, copies: 1, ...(method === "GET" || method === "HEAD" ? {} : { body: "{}" }) }, notes };
  }
  const chat = rng.chance(0.75);
  const path = chat ? "/v1/chat/completions" : "/v1/completions";
  notes.push(path);
  let doc: unknown = chat ? chatBody(rng) : completionBody(rng);
  if (odd(rng, 0.6)) notes.push(applySome(rng, 3, [() => { const r = mutateJson(rng, doc); doc = r.doc; return r.what; }]));
  let text = JSON.stringify(capStrings(doc, 4096)) ?? "null";
  const c: HttpCase = { method: "POST", path, headers, abandon: false, copies: rng.chance(0.1) ? 2 + rng.int(7) : 1 };
  if (c.copies > 1) notes.push(`${c.copies} copies at once`);
  const form = wild ? rng.int(25) : -1;
  const reshaped = [
    () => ["", "empty body"],
    () => [text + " ".repeat(BODY_BYTES), "body over the limit"],
    () => [text.slice(0, rng.int(text.length)), "torn JSON"],
    () => {
      const t = rng.pick(["null", "[]", "1", '"x"', "{", "{}", "\ufeff{}", '{"messages":[]}']);
      return [t, `body ${t}`];
    },
  ][form]?.();
  if (reshaped) {
    text = reshaped[0]!;
    notes.push(reshaped[1]!);
  }
  if (form === 4) {
    const r = mutateBytes(rng, Buffer.from(text));
    c.bodyBase64 = Buffer.from(r.bytes).toString("base64");
    notes.push(r.what);
  } else c.body = text;
  c.abandon = text.includes('"stream":true') && rng.chance(0.2);
  if (c.abandon) notes.push("client leaves after the first chunk");
  return { c, notes };
}

/** A 4xx's body must be `{"error": {"message": string, "type": string, ...}}`. */
function openAiError(text: string): { message: string } | undefined {
  try {
    const e = (JSON.parse(text) as { error?: { message?: unknown; type?: unknown } }).error;
    return e && typeof e.message === "string" && typeof e.type === "string" ? { message: e.message } : undefined;
  } catch {
    return undefined;
  }
}

async function send(base: string, c: HttpCase): Promise<void> {
  const ac = new AbortController();
  const body = c.bodyBase64 !== undefined ? Buffer.from(c.bodyBase64, "base64") : c.body;
  const res = await fetch(`${base}${c.path}`, { method: c.method, headers: c.headers, body, signal: ac.signal });
  if (c.abandon && res.ok && res.body) {
    const reader = res.body.getReader();
    await reader.read();
    ac.abort();
    await reader.cancel().catch(() => undefined);
    return;
  }
  const text = await res.text();
  if (res.status >= 200 && res.status < 300) {
    if (res.headers.get("content-type")?.includes("text/event-stream")) {
      const error = text.split("\n").find((l) => l.startsWith("data: ") && l.includes('"error"'));
      if (error) throw new UnexpectedError(`stream ended in an error event: ${error}`);
      if (!text.includes("data: [DONE]")) throw new UnexpectedError("stream ended without [DONE]");
    }
    return;
  }
  if (res.status >= 400 && res.status < 500) {
    const e = c.method === "HEAD" ? { message: "(HEAD)" } : openAiError(text);
    if (!e) throw new UnexpectedError(`${res.status} not in OpenAI's error format: ${text.slice(0, 300)}`);
    throw new PersonaError("E_BAD_INPUT", `${res.status} ${e.message}`);
  }
  throw new UnexpectedError(`HTTP ${res.status}: ${text.slice(0, 300)}`);
}

export const serverTarget: Target<null> = {
  name: "server",
  description: "persona serve over HTTP: chat/completion bodies, the persona field, invalid JSON, body sizes, content types, auth, paths (demo model, max_tokens ≤ 4)",
  async setup() {
    return null;
  },
  async make(rng): Promise<FuzzCase> {
    const { c, notes } = requestCase(rng);
    return { files: { "request.json": JSON.stringify(c, null, 2) }, commands: [], note: notes.join("; "), input: c };
  },
  async run(fc) {
    const s = await fuzzServer();
    const c = fc.input as HttpCase;
    const settled = await Promise.allSettled(Array.from({ length: c.copies }, () => send(s.url, c)));
    const errors = settled.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
    // A failure outranks a refusal (a copy past the queue is refused with 429).
    const outcome = errors.find((e) => !(e instanceof PersonaError)) ?? errors[0];
    // Every request must give its slot back (a client that left included) before the next case.
    for (let i = 0; i < 250 && s.state.active > 0; i++) await new Promise((r) => setTimeout(r, 20));
    if (s.state.active > 0) throw new UnexpectedError(`${s.state.active} request(s) still hold a slot 5 s after the reply`);
    if (outcome !== undefined) throw outcome;
  },
  async teardown() {
    await (await server)?.close();
  },
};
