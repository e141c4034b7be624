/**
 * `persona serve` settings: built-in defaults, then the config file (JSON), then command-line
 * flags. The file holds the server-wide persona defaults (served traits, monitored traits,
 * thresholds, action, default steering) and the limits; unknown keys are refused so a typo does
 * not silently leave a default in place.
 */
import { readFile } from "node:fs/promises";
import { z } from "zod";
import { PersonaError } from "../errors.js";
import { describeIssue, steerItemSchema, thresholdsSchema } from "./schema.js";

const actionSchema = z.object({ type: z.enum(["report", "steer", "refuse"]), steer: z.array(steerItemSchema).optional() }).strict();

export const serverConfigSchema = z
  .object({
    model: z.string().min(1),
    /** Traits served (their vectors are loaded at start); default: every trait registered for the model. */
    traits: z.array(z.string()).optional(),
    /** Traits monitored on requests that do not say; default: every served trait. */
    monitor: z.array(z.string()).optional(),
    /** Monitoring (and default steering) layer per trait; default: the vectors' best layer. */
    layers: z.record(z.string(), z.number().int()).default({}),
    thresholds: thresholdsSchema.default({}),
    action: z.union([z.enum(["report", "steer", "refuse"]).transform((type) => ({ type })), actionSchema]).default({ type: "report" }),
    /** Steering applied to requests that give none. */
    steer: z.array(steerItemSchema).default([]),
    host: z.string().min(1).default("127.0.0.1"),
    port: z.number().int().min(0).max(65535).default(8080),
    apiKey: z.string().min(8).optional(),
    /** Sequences decoded together. */
    parallel: z.number().int().min(1).max(256).default(4),
    /** Context (prompt + reply tokens) per sequence. */
    ctx: z.number().int().min(16).default(2048),
    /** Requests that may wait for a free sequence before new ones get 429. */
    queue: z.number().int().min(0).default(64),
    limits: z
      .object({
        bodyBytes: z.number().int().min(1024).default(1 << 20),
        messages: z.number().int().min(1).default(256),
        maxTokens: z.number().int().min(1).default(2048),
      })
      .strict()
      .default({ bodyBytes: 1 << 20, messages: 256, maxTokens: 2048 }),
    /** max_tokens when a request gives none. */
    defaultMaxTokens: z.number().int().min(1).default(256),
    /** Requests kept for the dashboard. */
    recent: z.number().int().min(1).max(10000).default(200),
    /** Seconds SIGTERM waits for in-flight requests before cancelling them. */
    shutdownGrace: z.number().min(0).default(10),
    threads: z.number().int().min(1).optional(),
  })
  .strict();

export type ServerConfig = z.infer<typeof serverConfigSchema>;
export type ServerConfigInput = z.input<typeof serverConfigSchema>;

export function parseServerConfig(input: unknown, source = "server config"): ServerConfig {
  const r = serverConfigSchema.safeParse(input);
  if (!r.success) throw new PersonaError("E_BAD_INPUT", `${source}: ${describeIssue(r.error).message}`);
  const c = r.data;
  if (c.defaultMaxTokens > c.limits.maxTokens) throw new PersonaError("E_BAD_INPUT", `${source}: defaultMaxTokens ${c.defaultMaxTokens} exceeds limits.maxTokens ${c.limits.maxTokens}`);
  return c;
}

/** Reads a JSON config file; `overrides` (the command line) win over it. */
export async function loadServerConfig(file: string | undefined, overrides: Partial<ServerConfigInput>): Promise<ServerConfig> {
  let fromFile: Record<string, unknown> = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (e) {
      throw new PersonaError("E_IO", `cannot read config ${file}: ${(e as Error).message}`);
    }
    try {
      fromFile = JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw new PersonaError("E_BAD_FORMAT", `config ${file} is not valid JSON: ${(e as Error).message}`);
    }
    if (typeof fromFile !== "object" || fromFile === null || Array.isArray(fromFile)) throw new PersonaError("E_BAD_FORMAT", `config ${file} must hold a JSON object`);
  }
  const defined = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  return parseServerConfig({ model: "demo", ...fromFile, ...defined }, file ?? "server config");
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

/** Binding beyond loopback exposes the model (and the dashboard's request log): an API key is required. */
export function checkBind(c: Pick<ServerConfig, "host" | "apiKey">): void {
  if (!LOOPBACK.has(c.host) && !c.apiKey) {
    throw new PersonaError("E_BAD_INPUT", `refusing to listen on ${c.host} without an API key: pass --api-key (or set PERSONA_API_KEY), or bind 127.0.0.1`);
  }
}
