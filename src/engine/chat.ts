/**
 * Chat templates: the model's own `tokenizer.chat_template`, rendered with @huggingface/jinja as
 * Hugging Face would; the caller falls back to llama.cpp's built-in templates when jinja fails.
 * A template is code from the model file: rendering runs in a worker thread with a time and
 * memory limit, so a template that loops for ever or builds a huge string cannot hang or
 * exhaust the process (found by `npm run fuzz`: `{% for i in range(100000000) %}`).
 */
import { Worker } from "node:worker_threads";
import { PersonaError } from "../errors.js";
import type { ChatMessage } from "./types.js";

export interface RenderOptions {
  addGenerationPrompt: boolean;
  bosToken: string;
  eosToken: string;
}

/** Longest a render may take; real templates take well under a millisecond. */
export const TEMPLATE_TIMEOUT_MS = 5000;
const TEMPLATE_HEAP_MB = 256;

// Plain JS (no loader needed in the worker); compiled templates are cached there by text.
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
import(${JSON.stringify(import.meta.resolve("@huggingface/jinja"))}).then(({ Template }) => {
  const compiled = new Map();
  parentPort.on("message", ({ id, template, context }) => {
    try {
      let t = compiled.get(template);
      if (!t) {
        t = new Template(template);
        compiled.set(template, t);
      }
      parentPort.postMessage({ id, text: t.render(context) });
    } catch (e) {
      parentPort.postMessage({ id, error: e instanceof Error ? e.message : String(e) });
    }
  });
});
`;

interface Pending {
  resolve(text: string): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

let worker: Worker | undefined;
const pending = new Map<number, Pending>();
let nextId = 1;

/** Stops the worker and fails what it was doing; the next render starts a fresh one. */
function failAll(e: Error): void {
  const w = worker;
  worker = undefined;
  for (const p of pending.values()) {
    clearTimeout(p.timer);
    p.reject(e);
  }
  pending.clear();
  void w?.terminate();
}

function renderer(): Worker {
  if (worker) return worker;
  const w = new Worker(WORKER_SOURCE, { eval: true, resourceLimits: { maxOldGenerationSizeMb: TEMPLATE_HEAP_MB } });
  w.on("message", (m: { id: number; text?: string; error?: string }) => {
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    clearTimeout(p.timer);
    if (pending.size === 0) w.unref();
    if (m.error !== undefined) p.reject(new Error(m.error));
    else p.resolve(m.text!);
  });
  w.on("error", (e) =>
    failAll(new PersonaError("E_BAD_MODEL", `the chat template could not be rendered: ${(e as Error).message} (heap limit ${TEMPLATE_HEAP_MB} MB)`)),
  );
  w.on("exit", () => {
    if (worker === w) failAll(new PersonaError("E_BAD_MODEL", "the chat template renderer stopped"));
  });
  // Held only while a render is pending: an idle renderer must not keep the process alive.
  w.unref();
  worker = w;
  return w;
}

/**
 * Renders `messages` with a jinja chat template. A template error rejects with a plain Error (the
 * caller may fall back to llama.cpp's templates); a template that runs past TEMPLATE_TIMEOUT_MS or
 * its memory limit rejects with E_BAD_MODEL.
 */
export function renderJinjaChat(template: string, messages: readonly ChatMessage[], o: RenderOptions): Promise<string> {
  const context = {
    messages: messages.map((m) => ({ role: m.role, content: m.content })),
    add_generation_prompt: o.addGenerationPrompt,
    bos_token: o.bosToken,
    eos_token: o.eosToken,
  };
  const w = renderer();
  const id = nextId++;
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => failAll(new PersonaError("E_BAD_MODEL", `the chat template did not finish rendering within ${TEMPLATE_TIMEOUT_MS / 1000} s`)),
      TEMPLATE_TIMEOUT_MS,
    );
    pending.set(id, { resolve, reject, timer });
    w.ref();
    w.postMessage({ id, template, context });
  });
}

export function validateMessages(messages: readonly ChatMessage[]): void {
  if (!Array.isArray(messages) || messages.length === 0) throw new PersonaError("E_BAD_INPUT", "messages must be a non-empty array");
  for (const [i, m] of messages.entries()) {
    if (typeof m?.role !== "string" || typeof m?.content !== "string") {
      throw new PersonaError("E_BAD_INPUT", `message ${i} must have a string role and content`);
    }
  }
}
