import { PersonaError } from "../errors.js";
import type { ChatLLM, ChatMessage } from "../traits/generate.js";
import { HttpClient, type HttpClientOptions } from "./http.js";
import { judgePrompt, parseScoreText } from "./prompts.js";
import type { Judge, JudgeInput } from "./types.js";

const OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1";

/** Connection settings shared by the OpenAI-compatible judge and chat client. */
export interface OpenAIConnectionOptions {
  /** Model name sent in every request. */
  model: string;
  /** API root, up to and including `/v1`. Defaults to env `OPENAI_BASE_URL`, else `https://api.openai.com/v1`. */
  baseURL?: string;
  /** Bearer token. Defaults to env `OPENAI_API_KEY`; may stay unset for local servers (vLLM, llama-server, Ollama). */
  apiKey?: string;
  /** Retry, timeout and concurrency settings; ignored when `http` is given. Defaults to `HttpClient`'s defaults. */
  httpOptions?: HttpClientOptions;
  /** A client to share (and share its concurrency limit) with other judges. Defaults to a new one. */
  http?: HttpClient;
}

export interface OpenAIJudgeOptions extends OpenAIConnectionOptions {
  /** `logprobs`: one token, probability-weighted over 0..100; `text`: parse the reply. Defaults to `logprobs`. */
  mode?: "logprobs" | "text";
  /** Least total probability on integer tokens 0..100 for a logprob score; below it the score is null. Defaults to 0.25. */
  minProbabilityMass?: number;
}

interface Connection {
  url: string;
  headers: Record<string, string>;
  http: HttpClient;
  baseURL: string;
}

function connect(opts: OpenAIConnectionOptions): Connection {
  const baseURL = (opts.baseURL ?? process.env.OPENAI_BASE_URL ?? OPENAI_DEFAULT_BASE_URL).replace(/\/+$/, "");
  const apiKey = opts.apiKey ?? process.env.OPENAI_API_KEY;
  if (!apiKey && baseURL === OPENAI_DEFAULT_BASE_URL) {
    throw new PersonaError("E_BAD_INPUT", "OPENAI_API_KEY is not set (needed for api.openai.com; other servers may run without a key)");
  }
  return {
    url: `${baseURL}/chat/completions`,
    headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
    http: opts.http ?? new HttpClient(opts.httpOptions),
    baseURL,
  };
}

/** `openai:MODEL`, plus `@BASEURL` for other servers: the same spec `resolveJudge` accepts. */
function connectionId(model: string, baseURL: string): string {
  return baseURL === OPENAI_DEFAULT_BASE_URL ? `openai:${model}` : `openai:${model}@${baseURL}`;
}

export interface TopLogprob {
  token: string;
  logprob: number;
}

/**
 * Σ p(k)·k / Σ p(k) over tokens that read as an integer 0..100 once whitespace is stripped; null
 * when Σ p(k) < `minMass`. Variants of one number (" 80" and "80") add up.
 */
export function scoreFromTopLogprobs(top: readonly TopLogprob[], minMass = 0.25): number | null {
  let mass = 0;
  let weighted = 0;
  for (const { token, logprob } of top) {
    const t = token.trim();
    if (!/^\d{1,3}$/.test(t)) continue;
    const k = Number(t);
    if (k > 100) continue;
    // A log-probability is at most 0; a server's rounding above it must not turn into a weight over 1 (or Infinity).
    const p = Math.exp(Math.min(logprob, 0));
    mass += p;
    weighted += p * k;
  }
  // Every k is at most 100, but the division can round to 100.00000000000001.
  return mass < minMass || mass === 0 ? null : Math.min(100, weighted / mass);
}

interface ChatCompletionReply {
  choices?: Array<{
    message?: { content?: string | null };
    logprobs?: { content?: Array<{ top_logprobs?: TopLogprob[] }> | null } | null;
  }>;
}

function firstChoice(reply: unknown, url: string): NonNullable<ChatCompletionReply["choices"]>[number] {
  const choice = (reply as ChatCompletionReply | null)?.choices?.[0];
  if (!choice) throw new PersonaError("E_JUDGE", `${url} returned no choices`);
  return choice;
}

/**
 * The well-formed entries of the first token's `top_logprobs` ({"token": string, "logprob": finite
 * number}); a server's malformed ones (null, a null logprob) carry no probability, so they are left out.
 */
function wellFormed(top: unknown): TopLogprob[] {
  if (!Array.isArray(top)) return [];
  return top.filter((t: unknown): t is TopLogprob => {
    const e = t as Partial<TopLogprob> | null;
    return typeof e === "object" && e !== null && typeof e.token === "string" && typeof e.logprob === "number" && Number.isFinite(e.logprob);
  });
}

/** Judge over any server that speaks OpenAI chat completions. */
export class OpenAIJudge implements Judge {
  readonly id: string;
  private readonly conn: Connection;
  private readonly model: string;
  private readonly mode: "logprobs" | "text";
  private readonly minMass: number;

  constructor(opts: OpenAIJudgeOptions) {
    this.conn = connect(opts);
    this.model = opts.model;
    this.mode = opts.mode ?? "logprobs";
    this.minMass = opts.minProbabilityMass ?? 0.25;
    this.id = connectionId(opts.model, this.conn.baseURL);
  }

  async score(input: JudgeInput, signal?: AbortSignal): Promise<number | null> {
    const messages = [{ role: "user", content: judgePrompt(input) }];
    const body =
      this.mode === "logprobs"
        ? { model: this.model, messages, max_tokens: 1, temperature: 0, logprobs: true, top_logprobs: 20 }
        : // A few tokens so "REFUSAL" or "100" is not cut short.
          { model: this.model, messages, max_tokens: 8, temperature: 0 };
    const choice = firstChoice(await this.conn.http.postJson(this.conn.url, body, this.conn.headers, signal), this.conn.url);
    const top: unknown = choice.logprobs?.content?.[0]?.top_logprobs;
    // Servers without logprob support answer with text only: read the number from it instead.
    const entries = wellFormed(top);
    if (this.mode === "logprobs" && entries.length > 0) return scoreFromTopLogprobs(entries, this.minMass);
    const content: unknown = choice.message?.content ?? "";
    if (typeof content !== "string") throw new PersonaError("E_JUDGE", `${this.conn.url} returned a choices[0].message.content that is not a string`);
    return parseScoreText(content);
  }
}

export interface OpenAIChatOptions extends OpenAIConnectionOptions {
  /** Sampling temperature. Defaults to 1. */
  temperature?: number;
  /** Longest reply in tokens. Defaults to 8000. */
  maxTokens?: number;
}

/** Plain chat completion, for writing trait artifacts. */
export class OpenAIChat implements ChatLLM {
  readonly id: string;
  private readonly conn: Connection;

  constructor(private readonly opts: OpenAIChatOptions) {
    this.conn = connect(opts);
    this.id = connectionId(opts.model, this.conn.baseURL);
  }

  async complete(messages: ChatMessage[], signal?: AbortSignal): Promise<string> {
    const body = {
      model: this.opts.model,
      messages,
      temperature: this.opts.temperature ?? 1,
      max_tokens: this.opts.maxTokens ?? 8000,
    };
    const choice = firstChoice(await this.conn.http.postJson(this.conn.url, body, this.conn.headers, signal), this.conn.url);
    const content = choice.message?.content;
    if (typeof content !== "string") throw new PersonaError("E_JUDGE", `${this.conn.url} returned no message content`);
    return content;
  }
}
