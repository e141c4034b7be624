/**
 * Request bodies in OpenAI's wire format, plus the optional `persona` field, as zod schemas.
 * Unknown fields are dropped (clients send `user`, `logit_bias`…); fields whose meaning the
 * server cannot honour (n > 1, penalties) are refused rather than silently ignored.
 */
import { z } from "zod";

const positions = z.enum(["all", "prompt", "response"]);

/** One steering entry of `persona.steer` (and of the config file's `steer`). */
export const steerItemSchema = z
  .object({
    /** A trait served by this server. */
    trait: z.string().min(1).max(100).optional(),
    /** Or a raw direction of n_embd numbers. */
    vectors: z.array(z.number()).max(65536).optional(),
    /** 1..n_layer; defaults to the trait's best layer. */
    layer: z.number().int().optional(),
    /** add: multiplier; ablate: fraction removed; cap: the threshold. */
    coef: z.number(),
    positions: positions.default("response"),
    mode: z.enum(["add", "ablate", "cap"]).default("add"),
    /** cap only: keep the projection at most (max) or at least (min) coef. */
    bound: z.enum(["max", "min"]).default("max"),
  })
  .refine((s) => (s.trait === undefined) !== (s.vectors === undefined), { message: "give exactly one of trait or vectors" });

export type SteerItem = z.infer<typeof steerItemSchema>;

const actionSchema = z.union([
  z.enum(["report", "steer", "refuse"]).transform((type) => ({ type, steer: undefined })),
  z.object({ type: z.enum(["report", "steer", "refuse"]), steer: z.array(steerItemSchema).max(16).optional() }),
]);

export const thresholdsSchema = z.record(z.string(), z.number());

export const personaFieldSchema = z.object({
  /** Traits whose projections are reported; defaults to the server's monitored traits. */
  monitor: z.array(z.string()).max(64).optional(),
  steer: z.array(steerItemSchema).max(16).optional(),
  /** Per trait: a last-prompt-token projection above this flags the request (and fires the action). */
  thresholds: thresholdsSchema.optional(),
  action: actionSchema.optional(),
  /** Also return one projection per generated token. */
  trace: z.boolean().optional(),
});

export type PersonaField = z.infer<typeof personaFieldSchema>;

const textPart = z.object({ type: z.literal("text"), text: z.string() });

const messageSchema = z.object({
  role: z.enum(["system", "developer", "user", "assistant"]),
  content: z.union([z.string(), z.array(textPart), z.null()]),
});

const stopSchema = z.union([z.string(), z.array(z.string()).max(4)]).nullish();

/** Sampling and streaming fields common to both generation endpoints. */
const generationFields = {
  model: z.string().optional(),
  max_tokens: z.number().int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  n: z.literal(1).nullish(),
  stop: stopSchema,
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  presence_penalty: z.literal(0).nullish(),
  /** vLLM's extension: generate exactly max_tokens, past any end-of-generation token. */
  ignore_eos: z.boolean().nullish(),
  frequency_penalty: z.literal(0).nullish(),
  persona: personaFieldSchema.optional(),
};

export const chatRequestSchema = z.object({
  ...generationFields,
  messages: z.array(messageSchema).min(1),
  /** The newer name of max_tokens. */
  max_completion_tokens: z.number().int().min(1).nullish(),
});

export type ChatRequest = z.infer<typeof chatRequestSchema>;

export const completionRequestSchema = z.object({
  ...generationFields,
  prompt: z.union([z.string(), z.array(z.string()).length(1)]),
});

export type CompletionRequest = z.infer<typeof completionRequestSchema>;

/** The first problem of a failed parse, as one sentence naming the field (OpenAI's `param`). */
export function describeIssue(error: z.ZodError): { message: string; param: string | null } {
  const issue = error.issues[0];
  if (!issue) return { message: "invalid request body", param: null };
  const param = issue.path.length ? issue.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("").replace(/^\./, "") : null;
  return { message: param ? `${param}: ${issue.message}` : issue.message, param };
}
