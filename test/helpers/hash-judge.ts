import { createHash } from "node:crypto";
import { chatCompletion, type FakeHandler, type RecordedRequest } from "./fake-llm-server.js";

/**
 * A deterministic judge behind the fake LLM server: the score is a hash of the filled rubric
 * (so of question and answer), answered as a single logprob token. Trait scores spread over
 * 0..100, coherence over 40..100, so some pairs pass the default filter and some fail each test.
 */
export function judgePromptOf(req: RecordedRequest): string {
  const body = req.body as { messages?: Array<{ content?: string }> };
  return body.messages?.[0]?.content ?? "";
}

export function isCoherencePrompt(prompt: string): boolean {
  return prompt.startsWith("You are grading how coherent");
}

export function hashScore(prompt: string): number {
  const h = createHash("sha256").update(prompt).digest().readUInt32LE(0);
  return isCoherencePrompt(prompt) ? 40 + (h % 61) : h % 101;
}

export function hashJudgeHandler(delayMs = 0): FakeHandler {
  return (req) => {
    const score = String(hashScore(judgePromptOf(req)));
    return { body: chatCompletion(score, { [score]: 1 }), delayMs };
  };
}
