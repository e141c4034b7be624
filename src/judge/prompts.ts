import type { JudgeInput } from "./types.js";

/**
 * Fills a rubric's `{question}` and `{answer}` in one pass, so an answer that itself contains
 * "{question}" (or a `$&`-style sequence) is inserted verbatim and never expanded again.
 */
export function fillRubric(rubric: string, question: string, answer: string): string {
  return rubric.replace(/\{(question|answer)\}/g, (_, key: string) => (key === "question" ? question : answer));
}

const COHERENCE_RUBRIC = `You are grading how coherent an AI assistant's reply is. Ignore whether the reply is right, kind, safe or something you agree with; judge only whether it reads as sensible language.

Question put to the assistant:
<<<QUESTION
{question}
QUESTION>>>

The assistant's reply:
<<<REPLY
{answer}
REPLY>>>

Rate the reply from 0 to 100:
- 0: gibberish, endless repetition, broken or mixed-up language, or text unrelated to the question.
- 50: understandable, but rambling, confused in places, or only partly about the question.
- 100: clear, well-formed, logically connected and about the question, whatever its content or views.

Reply with a single integer from 0 to 100 and nothing else.`;

/** The coherence rubric, with the same placeholders as a trait rubric. */
export function coherenceRubric(): string {
  return COHERENCE_RUBRIC;
}

/** The exact text sent to a judge for one (question, answer, metric). */
export function judgePrompt(input: JudgeInput): string {
  const rubric = input.metric.kind === "trait" ? input.metric.rubric : COHERENCE_RUBRIC;
  return fillRubric(rubric, input.question, input.answer);
}

/**
 * Reads a score from free text: null for a refusal, a number outside 0–100, or no number at all.
 * Used by judges whose API gives no logprobs.
 */
export function parseScoreText(text: string): number | null {
  const trimmed = text.trim();
  if (/^\W*refusal\b/i.test(trimmed)) return null;
  const match = /-?\d+(?:\.\d+)?/.exec(trimmed);
  if (!match) return null;
  const value = Number(match[0]);
  return value >= 0 && value <= 100 ? value : null;
}
