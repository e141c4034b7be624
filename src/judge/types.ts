/**
 * The one interface every judge implements: OpenAI-compatible, Anthropic, local GGUF, demo rubric.
 * A judge scores one (question, answer) pair on one metric, 0–100, or null when it cannot
 * (refusal, too little probability mass on numbers, unparseable text).
 */
export type JudgeMetric =
  | { kind: "trait"; trait: string; /** rubric with `{question}` and `{answer}` placeholders */ rubric: string }
  | { kind: "coherence" };

export interface JudgeInput {
  question: string;
  answer: string;
  metric: JudgeMetric;
}

export interface Judge {
  /** Stable identifier recorded in run directories and vectors metadata, e.g. `openai:gpt-4.1-mini`. */
  readonly id: string;
  score(input: JudgeInput, signal?: AbortSignal): Promise<number | null>;
  dispose?(): Promise<void>;
}
