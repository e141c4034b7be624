/**
 * A conversation held with a running `persona serve` (or any OpenAI-compatible server): the
 * history stays here, each reply is one streamed /v1/chat/completions request, steering travels
 * in the `persona` field (trait names the server serves).
 */
import type { ChatMessage } from "../engine/types.js";
import { PersonaError } from "../errors.js";
import type { ConversationReply } from "../pipeline/chat.js";
import type { PersonaReport } from "./persona.js";
import type { SteerItem } from "./schema.js";

export interface RemoteOptions {
  /** Server root, e.g. http://127.0.0.1:8080 */
  url: string;
  apiKey?: string;
  system?: string;
  temperature?: number;
  maxTokens?: number;
  seed?: number;
}

/** A conversation reply as the server tells it: token ids stay on the server. */
export interface RemoteReply extends Omit<ConversationReply, "tokens"> {
  tokens: null;
  persona: PersonaReport | undefined;
}

export class RemoteConversation {
  system: string | undefined;
  steer: SteerItem[] = [];
  private history: ChatMessage[] = [];
  private turn = 0;
  private readonly base: string;

  constructor(private readonly opts: RemoteOptions) {
    this.system = opts.system;
    this.base = opts.url.replace(/\/+$/, "");
  }

  reset(): void {
    this.history = [];
  }

  /** The served model's id (also checks the server answers and the key is right). */
  async modelId(): Promise<string> {
    const body = (await this.request("GET", "/v1/models").then((r) => r.json())) as { data?: { id: string }[] };
    const id = body.data?.[0]?.id;
    if (!id) throw new PersonaError("E_NETWORK", `${this.base}/v1/models lists no model`);
    return id;
  }

  async reply(userText: string, opts: { signal?: AbortSignal; onPiece?(piece: Uint8Array): void } = {}): Promise<RemoteReply> {
    const user: ChatMessage = { role: "user", content: userText };
    const messages = [...(this.system !== undefined ? [{ role: "system", content: this.system }] : []), ...this.history, user];
    const res = await this.request(
      "POST",
      "/v1/chat/completions",
      {
        messages,
        temperature: this.opts.temperature ?? 1,
        max_tokens: this.opts.maxTokens ?? 256,
        seed: (this.opts.seed ?? 0) + this.turn,
        stream: true,
        stream_options: { include_usage: true },
        ...(this.steer.length ? { persona: { steer: this.steer } } : {}),
      },
      opts.signal,
    );
    const encoder = new TextEncoder();
    let text = "";
    let finishReason: ConversationReply["finishReason"] = "stop";
    let promptTokens = 0;
    let persona: PersonaReport | undefined;
    for await (const data of sseData(res.body!, opts.signal)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data) as {
        error?: { message: string };
        choices?: { delta?: { content?: string; refusal?: string }; finish_reason?: string | null }[];
        usage?: { prompt_tokens: number };
        persona?: PersonaReport;
      };
      if (chunk.error) throw new PersonaError("E_NETWORK", `the server failed the reply: ${chunk.error.message}`);
      const choice = chunk.choices?.[0];
      const piece = (choice?.delta?.content ?? "") + (choice?.delta?.refusal ?? "");
      if (piece) {
        text += piece;
        opts.onPiece?.(encoder.encode(piece));
      }
      if (choice?.finish_reason) finishReason = choice.finish_reason === "length" ? "length" : "stop";
      if (chunk.persona) persona = chunk.persona;
      if (chunk.usage) promptTokens = chunk.usage.prompt_tokens;
    }
    this.turn++;
    this.history.push(user, { role: "assistant", content: text });
    return { turn: this.turn, text, tokens: null, promptTokens, finishReason, dropped: 0, persona };
  }

  private async request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers: { "content-type": "application/json", ...(this.opts.apiKey ? { authorization: `Bearer ${this.opts.apiKey}` } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal,
      });
    } catch (e) {
      if (signal?.aborted) throw new PersonaError("E_ABORTED", "reply cancelled");
      throw new PersonaError("E_NETWORK", `cannot reach ${this.base}: ${(e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message}`);
    }
    if (!res.ok) {
      const text = await res.text();
      let message = text;
      try {
        message = (JSON.parse(text) as { error: { message: string } }).error.message;
      } catch {
        // not an OpenAI error body; keep the text
      }
      throw new PersonaError(res.status === 401 ? "E_AUTH" : res.status < 500 ? "E_BAD_INPUT" : "E_NETWORK", `${this.base}${path}: ${res.status} ${message}`);
    }
    return res;
  }
}

/** The `data:` payloads of a server-sent-events body. */
async function* sseData(body: ReadableStream<Uint8Array>, signal: AbortSignal | undefined): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for await (const bytes of body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(bytes, { stream: true });
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = event
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trimStart())
          .join("\n");
        if (data) yield data;
      }
    }
  } catch (e) {
    if (signal?.aborted) throw new PersonaError("E_ABORTED", "reply cancelled");
    throw new PersonaError("E_NETWORK", `the connection to the server broke: ${(e as Error).message}`);
  }
}
