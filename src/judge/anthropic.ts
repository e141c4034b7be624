import { PersonaError } from "../errors.js";
import type { ChatLLM, ChatMessage } from "../traits/generate.js";
import { HttpClient, type HttpClientOptions } from "./http.js";
import { judgePrompt, parseScoreText } from "./prompts.js";
import type { Judge, JudgeInput } from "./types.js";

const ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com";
const ANTHROPIC_VERSION = "2023-06-01";

export interface AnthropicConnectionOptions {
  /** Model name sent in every request. */
  model: string;
  /** API root without `/v1`. Defaults to env `ANTHROPIC_BASE_URL`, else `https://api.anthropic.com`. */
  baseURL?: string;
  /** Defaults to env `ANTHROPIC_API_KEY`; required. */
  apiKey?: string;
  /** Retry, timeout and concurrency settings; ignored when `http` is given. Defaults to `HttpClient`'s defaults. */
  httpOptions?: HttpClientOptions;
  /** A client to share with other judges. Defaults to a new one. */
  http?: HttpClient;
}

interface Connection {
  url: string;
  headers: Record<string, string>;
  http: HttpClient;
}

function connect(opts: AnthropicConnectionOptions): Connection {
  const baseURL = (opts.baseURL ?? process.env.ANTHROPIC_BASE_URL ?? ANTHROPIC_DEFAULT_BASE_URL).replace(/\/+$/, "");
  const apiKey = opts.apiKey ?? process.env.ANTHROPIC_API_KEY;
  if (!apiKey) throw new PersonaError("E_BAD_INPUT", "ANTHROPIC_API_KEY is not set");
  return {
    url: `${baseURL}/v1/messages`,
    headers: { "x-api-key": apiKey, "anthropic-version": ANTHROPIC_VERSION },
    http: opts.http ?? new HttpClient(opts.httpOptions),
  };
}

interface MessagesReply {
  content?: Array<{ type?: string; text?: string }>;
}

async function send(conn: Connection, body: Record<string, unknown>, signal?: AbortSignal): Promise<string> {
  const reply = (await conn.http.postJson(conn.url, body, conn.headers, signal)) as MessagesReply | null;
  const blocks = reply?.content;
  if (!Array.isArray(blocks)) throw new PersonaError("E_JUDGE", `${conn.url} returned no content`);
  return (blocks as unknown[])
    .filter((b): b is { type: "text"; text: string } => typeof b === "object" && b !== null && (b as { type?: unknown }).type === "text" && typeof (b as { text?: unknown }).text === "string")
    .map((b) => b.text)
    .join("");
}

/** Anthropic gives no logprobs, so this judge reads the number from the reply text. */
export class AnthropicJudge implements Judge {
  readonly id: string;
  private readonly conn: Connection;

  constructor(private readonly opts: AnthropicConnectionOptions) {
    this.conn = connect(opts);
    this.id = `anthropic:${opts.model}`;
  }

  async score(input: JudgeInput, signal?: AbortSignal): Promise<number | null> {
    const text = await send(
      this.conn,
      {
        model: this.opts.model,
        max_tokens: 8,
        temperature: 0,
        messages: [{ role: "user", content: judgePrompt(input) }],
      },
      signal,
    );
    return parseScoreText(text);
  }
}

export interface AnthropicChatOptions extends AnthropicConnectionOptions {
  /** Sampling temperature. Defaults to 1. */
  temperature?: number;
  /** Longest reply in tokens. Defaults to 8000. */
  maxTokens?: number;
}

export class AnthropicChat implements ChatLLM {
  readonly id: string;
  private readonly conn: Connection;

  constructor(private readonly opts: AnthropicChatOptions) {
    this.conn = connect(opts);
    this.id = `anthropic:${opts.model}`;
  }

  complete(messages: ChatMessage[], signal?: AbortSignal): Promise<string> {
    // The Messages API takes the system prompt as a field, not as a message.
    const system = messages
      .filter((m) => m.role === "system")
      .map((m) => m.content)
      .join("\n\n");
    const body: Record<string, unknown> = {
      model: this.opts.model,
      max_tokens: this.opts.maxTokens ?? 8000,
      temperature: this.opts.temperature ?? 1,
      messages: messages.filter((m) => m.role !== "system"),
    };
    if (system) body.system = system;
    return send(this.conn, body, signal);
  }
}
