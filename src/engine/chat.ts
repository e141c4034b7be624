/**
 * Chat templates: the model's own `tokenizer.chat_template`, rendered with @huggingface/jinja as
 * Hugging Face would; the caller falls back to llama.cpp's built-in templates when jinja fails.
 */
import { Template } from "@huggingface/jinja";
import { PersonaError } from "../errors.js";
import type { ChatMessage } from "./types.js";

const compiled = new Map<string, Template>();

export interface RenderOptions {
  addGenerationPrompt: boolean;
  bosToken: string;
  eosToken: string;
}

export function renderJinjaChat(template: string, messages: readonly ChatMessage[], o: RenderOptions): string {
  let t = compiled.get(template);
  if (!t) {
    t = new Template(template);
    compiled.set(template, t);
  }
  return t.render({
    messages: messages.map((m) => ({ role: m.role, content: m.content })),
    add_generation_prompt: o.addGenerationPrompt,
    bos_token: o.bosToken,
    eos_token: o.eosToken,
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
