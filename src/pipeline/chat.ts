/**
 * A conversation with a model: history, system prompt and steering, and replies that fit the
 * model's trained context (the oldest exchanges are left out first). The CLI's `persona chat`
 * is a terminal around this; a library user drives it directly.
 */
import type { Model } from "../engine/Model.js";
import type { ResolvedSteering } from "../engine/steering.js";
import type { ChatMessage, GenerationResult } from "../engine/types.js";

export interface ConversationOptions {
  system?: string;
  steering?: ResolvedSteering;
  /** Defaults to 1. */
  temperature?: number;
  /** Most new tokens per reply. Defaults to 256. */
  maxTokens?: number;
  /** Turn i samples with seed + i. Defaults to 0. */
  seed?: number;
}

export interface ConversationReply {
  /** The turn's number, from 1. */
  turn: number;
  text: string;
  tokens: Int32Array;
  promptTokens: number;
  finishReason: GenerationResult["finishReason"];
  /** Oldest exchanges left out of this prompt to make room for the reply. */
  dropped: number;
}

export class Conversation {
  system: string | undefined;
  steering: ResolvedSteering | undefined;
  private history: ChatMessage[] = [];
  private turn = 0;
  private readonly temperature: number;
  private readonly maxTokens: number;
  private readonly seed: number;

  constructor(
    private readonly model: Model,
    opts: ConversationOptions = {},
  ) {
    this.system = opts.system;
    this.steering = opts.steering;
    this.temperature = opts.temperature ?? 1;
    this.maxTokens = opts.maxTokens ?? 256;
    this.seed = opts.seed ?? 0;
  }

  /** Forgets the exchanges (system prompt and steering stay). */
  reset(): void {
    this.history = [];
  }

  /**
   * Generates the reply to `userText` and keeps the exchange; `onPiece` streams the reply's
   * bytes. A cancelled reply (E_ABORTED) is not kept.
   */
  async reply(userText: string, opts: { signal?: AbortSignal; onPiece?(piece: Uint8Array): void; onDropped?(n: number): void } = {}): Promise<ConversationReply> {
    const user: ChatMessage = { role: "user", content: userText };
    const { prompt, dropped } = await this.fitPrompt(user);
    if (dropped > 0) opts.onDropped?.(dropped);
    const onPiece = opts.onPiece;
    const [result] = await this.model.generate([{ prompt }], {
      temperature: this.temperature,
      maxTokens: this.maxTokens,
      seed: this.seed + this.turn,
      steering: this.steering,
      signal: opts.signal,
      onToken: onPiece ? (_i, _t, piece) => onPiece(piece) : undefined,
    });
    this.turn++;
    this.history.push(user, { role: "assistant", content: result!.text });
    return { turn: this.turn, text: result!.text, tokens: result!.tokens, promptTokens: prompt.length, finishReason: result!.finishReason, dropped };
  }

  /**
   * The templated conversation; the oldest exchanges go first when it would not leave room for a
   * reply in the trained context (small models, like the demo's 128 tokens, keep little history).
   */
  private async fitPrompt(user: ChatMessage): Promise<{ prompt: Int32Array; dropped: number }> {
    const ctx = this.model.info.nCtxTrain;
    const limit = ctx - Math.min(this.maxTokens, Math.floor(ctx / 2));
    for (let dropped = 0; ; dropped++) {
      const past = this.history.slice(2 * dropped);
      const messages: ChatMessage[] = [...(this.system === undefined ? [] : [{ role: "system" as const, content: this.system }]), ...past, user];
      const prompt = await this.model.encodeChat(messages);
      if (prompt.length <= limit || past.length === 0) {
        if (dropped > 0) this.history = past;
        return { prompt, dropped };
      }
    }
  }
}
