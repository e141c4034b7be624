/**
 * Judge replies over HTTP, as `--judge openai:MODEL@URL` (logprob and text modes) and
 * `--judge anthropic:MODEL` score a rollout: a local server answers with mutated OpenAI
 * chat-completion (logprobs) and Anthropic message bodies, odd statuses and Retry-After headers,
 * bodies cut short, sent slowly, dropped or stalled. A score must come back as null or a number in
 * 0..100; anything else (NaN, a stack trace) is a failure.
 */
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { AnthropicJudge } from "../../../src/judge/anthropic.js";
import { OpenAIJudge } from "../../../src/judge/openai.js";
import type { Judge } from "../../../src/judge/types.js";
import { delivery, localServer, type PlannedReply, retryAfter, status } from "../http.js";
import { applySome, interestingNumber, jsonValue, mutateBytes, mutateJson, nastyString } from "../mutate.js";
import { type FuzzCase, type Target, UnexpectedError } from "../target.js";

type Kind = "openai-logprobs" | "openai-text" | "anthropic";

interface JudgeCase {
  kind: Kind;
  replies: PlannedReply[];
}

/** Short waits so a case that retries to the end still takes well under a second. */
const HTTP_OPTIONS = { maxRetries: 2, timeoutMs: 300, baseDelayMs: 1, maxDelayMs: 20 };

function openaiReply(rng: Rng): Record<string, unknown> {
  const tokens = ["80", " 80", "75", "100", "0", "101", "-5", "REF", "abc", " ", "", "1e2", "080", "½"];
  const top = Array.from({ length: 1 + rng.int(6) }, () => ({ token: rng.pick(tokens), logprob: rng.pick([-0.1, -1, -3, -20, 0]) }));
  return {
    id: "chatcmpl-fuzz",
    object: "chat.completion",
    choices: [{ index: 0, message: { role: "assistant", content: rng.pick(["80", "REFUSAL", " 42 ", "score: 7", "abc", ""]) }, finish_reason: "length", logprobs: { content: [{ token: "80", logprob: -0.1, top_logprobs: top }] } }],
  };
}

function anthropicReply(rng: Rng): Record<string, unknown> {
  return { id: "msg_fuzz", type: "message", role: "assistant", content: [{ type: "text", text: rng.pick(["80", "REFUSAL", "about 55", "none"]) }], stop_reason: "end_turn" };
}

/** Field-aware edits of a reply: the parts the judges read, retyped or set to boundary values. */
function editReply(rng: Rng, doc: Record<string, unknown>, kind: Kind): string {
  const choice = (doc.choices as Record<string, unknown>[] | undefined)?.[0];
  const top = ((choice?.logprobs as { content?: { top_logprobs?: unknown[] }[] } | undefined)?.content?.[0])?.top_logprobs;
  return applySome(rng, 3, [
    () => mutateJson(rng, doc).what,
    () => {
      if (kind === "anthropic") {
        const blocks = doc.content as unknown[];
        if (Array.isArray(blocks)) blocks.push(rng.pick([null, 5, "text", { type: "text" }, { type: "text", text: 5 }, { type: "tool_use", text: "90" }, { type: "text", text: nastyString(rng) }, jsonValue(rng)]));
        return "content block";
      }
      if (!Array.isArray(top)) return "no top_logprobs";
      top[rng.int(top.length + 1)] = rng.pick([null, 5, "80", {}, { token: 80, logprob: -1 }, { token: "80" }, { token: "80", logprob: "x" }, { token: null, logprob: -1 }, { token: "90", logprob: interestingNumber(rng) }, jsonValue(rng)]);
      return "top_logprobs entry";
    },
    () => {
      if (choice) choice[rng.pick(["message", "logprobs"])] = jsonValue(rng);
      return "choice field retyped";
    },
    () => {
      if (top) for (const t of top) if (t && typeof t === "object") (t as Record<string, unknown>).logprob = interestingNumber(rng);
      return "every logprob set to a boundary number";
    },
  ]);
}

function plannedReply(rng: Rng, kind: Kind): PlannedReply {
  const doc = kind === "anthropic" ? anthropicReply(rng) : openaiReply(rng);
  let body: string | Uint8Array = JSON.stringify(rng.chance(0.7) ? (editReply(rng, doc, kind), doc) : doc) ?? "null";
  if (rng.chance(0.15)) body = mutateBytes(rng, Buffer.from(body)).bytes;
  const headers: Record<string, string> = { "content-type": rng.pick(["application/json", "text/html", "application/json; charset=utf-16"]) };
  if (rng.chance(0.3)) headers["retry-after"] = retryAfter(rng);
  if (rng.chance(0.05)) headers["content-length"] = String(rng.pick([0, 1, 1e6]));
  return { status: rng.chance(0.6) ? 200 : status(rng), headers, body, delivery: delivery(rng) };
}

function judgeFor(c: JudgeCase, origin: string): Judge {
  const common = { model: "fuzz", apiKey: "k", httpOptions: HTTP_OPTIONS };
  if (c.kind === "anthropic") return new AnthropicJudge({ ...common, baseURL: origin });
  return new OpenAIJudge({ ...common, baseURL: `${origin}/v1`, mode: c.kind === "openai-text" ? "text" : "logprobs" });
}

export const judgeTarget: Target<null> = {
  name: "judge",
  description: "judge replies over HTTP: OpenAI chat completions (logprobs, text) and Anthropic messages; statuses, Retry-After, cut/slow/dropped bodies",
  setup: async () => null,
  async make(rng): Promise<FuzzCase> {
    const kind = rng.pick<Kind>(["openai-logprobs", "openai-logprobs", "openai-text", "anthropic"]);
    // One reply per attempt (the judge retries up to twice).
    const input: JudgeCase = { kind, replies: Array.from({ length: 3 }, () => plannedReply(rng, kind)) };
    const shown = input.replies.map((r) => ({ ...r, body: typeof r.body === "string" ? r.body : Buffer.from(r.body).toString("base64") }));
    return { files: { "replies.json": JSON.stringify({ kind, replies: shown }, null, 2) }, commands: [], note: `${kind}: statuses ${input.replies.map((r) => `${r.status}/${r.delivery}`).join(", ")}`, input };
  },
  async run(c) {
    const input = c.input as JudgeCase;
    const server = await localServer();
    let attempt = 0;
    server.serve(() => input.replies[Math.min(attempt++, input.replies.length - 1)]!);
    const score = await judgeFor(input, server.origin).score({ question: "How are you?", answer: "Fine.", metric: { kind: "coherence" } });
    if (score !== null && !(Number.isFinite(score) && score >= 0 && score <= 100)) throw new UnexpectedError(`the judge returned the score ${score}`);
  },
};
