import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A real HTTP server on 127.0.0.1:0 that speaks just enough of OpenAI chat completions
 * (`POST /v1/chat/completions`) and Anthropic messages (`POST /v1/messages`) for tests. Replies come
 * from a script queue first, then from the default handler; it records every request and the
 * most requests it ever had in flight.
 */
export interface FakeReply {
  /** Defaults to 200. */
  status?: number;
  headers?: Record<string, string>;
  /** JSON-encoded unless `raw` is set. */
  body?: unknown;
  /** Sent verbatim (for malformed JSON). */
  raw?: string;
  /** Wait this long before answering. */
  delayMs?: number;
}

export interface RecordedRequest {
  path: string;
  headers: IncomingMessage["headers"];
  body: unknown;
}

export type FakeHandler = (req: RecordedRequest) => FakeReply;

export interface FakeLLMServer {
  /** `http://127.0.0.1:PORT` */
  origin: string;
  /** `origin + "/v1"`, an OpenAI base URL. */
  baseURL: string;
  requests: RecordedRequest[];
  /** The largest number of requests being handled at the same moment. */
  maxInFlight: number;
  /** Clears `requests` and `maxInFlight`. */
  reset(): void;
  /** Queues replies used (in order) before the default handler. */
  enqueue(...replies: FakeReply[]): void;
  setHandler(handler: FakeHandler): void;
  close(): Promise<void>;
}

/** An OpenAI chat completion; `topLogprobs` maps token → probability for the first generated token. */
export function chatCompletion(content: string, topLogprobs?: Record<string, number>): unknown {
  return {
    id: "chatcmpl-fake",
    object: "chat.completion",
    choices: [
      {
        index: 0,
        message: { role: "assistant", content },
        finish_reason: "length",
        logprobs: topLogprobs
          ? {
              content: [
                {
                  token: content,
                  logprob: Math.log(topLogprobs[content] ?? 1e-9),
                  top_logprobs: Object.entries(topLogprobs).map(([token, p]) => ({ token, logprob: Math.log(p) })),
                },
              ],
            }
          : null,
      },
    ],
  };
}

export function anthropicMessage(text: string): unknown {
  return {
    id: "msg_fake",
    type: "message",
    role: "assistant",
    content: [{ type: "text", text }],
    stop_reason: "end_turn",
  };
}

const notFound: FakeHandler = (req) => ({ status: 404, body: { error: `no route ${req.path}` } });

export async function startFakeLLMServer(handler: FakeHandler = notFound): Promise<FakeLLMServer> {
  const queue: FakeReply[] = [];
  let current = handler;
  let inFlight = 0;
  const timers = new Set<NodeJS.Timeout>();
  const state = { requests: [] as RecordedRequest[], maxInFlight: 0 };

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    inFlight++;
    state.maxInFlight = Math.max(state.maxInFlight, inFlight);
    let finished = false;
    // A client that timed out or aborted is no longer in flight, even if our delayed reply is pending.
    const finish = () => {
      if (!finished) inFlight--;
      finished = true;
    };
    res.on("close", finish);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        body = text;
      }
      const recorded: RecordedRequest = { path: req.url ?? "", headers: req.headers, body };
      state.requests.push(recorded);
      const reply = queue.shift() ?? current(recorded);
      const send = () => {
        finish();
        if (res.destroyed) return;
        const payload = reply.raw ?? JSON.stringify(reply.body ?? {});
        res.writeHead(reply.status ?? 200, { "content-type": "application/json", ...reply.headers });
        res.end(payload);
      };
      if (!reply.delayMs) return send();
      const timer = setTimeout(() => {
        timers.delete(timer);
        send();
      }, reply.delayMs);
      timers.add(timer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    origin,
    baseURL: `${origin}/v1`,
    get requests() {
      return state.requests;
    },
    get maxInFlight() {
      return state.maxInFlight;
    },
    reset: () => {
      state.requests.length = 0;
      state.maxInFlight = inFlight;
      queue.length = 0;
    },
    enqueue: (...replies) => void queue.push(...replies),
    setHandler: (h) => {
      current = h;
    },
    close: () =>
      new Promise<void>((resolve) => {
        // Delayed replies to clients that timed out must not hold the test run open.
        for (const t of timers) clearTimeout(t);
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
