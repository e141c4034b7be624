import { createInterface } from "node:readline";
import type { Command } from "commander";
import type { Model } from "../../engine/Model.js";
import { PersonaError } from "../../errors.js";
import { Conversation, type ConversationReply } from "../../pipeline/chat.js";
import { RemoteConversation, type RemoteReply } from "../../server/client.js";
import { loadSteering, type SteeringRef } from "../../vectors/steer.js";
import { collectSteer, formatSteeringRef, parseSteeringRef, STEER_SYNTAX } from "../args/steer.js";
import { withEngineFlags, withModel } from "../engine.js";
import { note, print, write } from "../output.js";
import { withSamplingFlags } from "../args/sampling.js";

const HELP = `commands:
  /steer SPEC     add steering (${STEER_SYNTAX})
  /unsteer        remove all steering
  /system TEXT    set the system prompt (empty text removes it)
  /reset          forget the conversation (system prompt and steering stay)
  /help           this list
  /quit           leave (Ctrl-D too)`;

interface ChatFlags {
  model?: string;
  server?: string;
  apiKey?: string;
  steer?: SteeringRef[];
  system?: string;
  temperature: number;
  maxTokens: number;
  seed: number;
  json?: boolean;
  threads?: number;
}

function parseSteer(arg: string): SteeringRef[] {
  try {
    return parseSteeringRef(arg);
  } catch (e) {
    throw e instanceof PersonaError ? new PersonaError(e.code, `/steer "${arg}": ${e.message}`) : e;
  }
}

/** What the terminal talks to: a model loaded here, or a `persona serve` at --server. */
interface ChatTarget {
  system: string | undefined;
  reset(): void;
  /** Replaces the steering (throws on a bad ref, leaving the old one). */
  setSteering(refs: readonly SteeringRef[]): Promise<void>;
  reply(userText: string, opts: { signal?: AbortSignal; onPiece?(piece: Uint8Array): void; onDropped?(n: number): void }): Promise<ConversationReply | RemoteReply>;
}

/** Either conversation behind the terminal; only how steering is set differs. */
function chatTarget(conversation: Conversation | RemoteConversation, setSteering: ChatTarget["setSteering"]): ChatTarget {
  return {
    get system() {
      return conversation.system;
    },
    set system(v) {
      conversation.system = v;
    },
    reset: () => conversation.reset(),
    setSteering,
    reply: (text, o) => conversation.reply(text, o),
  };
}

function localTarget(model: Model, opts: ChatFlags): ChatTarget {
  const conversation = new Conversation(model, { system: opts.system, temperature: opts.temperature, maxTokens: opts.maxTokens, seed: opts.seed });
  return chatTarget(conversation, async (refs) => void (conversation.steering = await loadSteering(refs, model)));
}

function remoteTarget(conversation: RemoteConversation): ChatTarget {
  return chatTarget(conversation, async (refs) => {
    conversation.steer = refs.map((r) => {
      // The server steers with the vectors it serves; a local file means nothing there.
      if (/\.(safetensors|pt)(#.*)?$/.test(r.source)) throw new PersonaError("E_BAD_STEER_ARG", `a server steers by trait name, not a file (${r.source})`);
      return { trait: r.source, layer: r.layer, coef: r.coef, positions: r.positions, mode: r.mode, bound: r.bound ?? "max" };
    });
  });
}

/**
 * The terminal around a conversation (pipeline/chat.ts, or a server's): slash commands, streamed
 * replies on stdout (or one JSON line per turn with --json), notes on stderr.
 */
class ChatSession {
  /** Set while a reply is being generated, so Ctrl-C stops the reply instead of the program. */
  current: AbortController | undefined;

  constructor(
    private readonly conversation: ChatTarget,
    private readonly opts: ChatFlags,
    private refs: SteeringRef[],
  ) {}

  /** Handles one input line; returns false to quit. */
  async handle(line: string): Promise<boolean> {
    const text = line.trim();
    if (text === "") return true;
    if (!text.startsWith("/")) {
      await this.reply(text);
      return true;
    }
    const space = text.indexOf(" ");
    const command = space < 0 ? text : text.slice(0, space);
    const arg = space < 0 ? "" : text.slice(space + 1).trim();
    switch (command) {
      case "/quit":
      case "/exit":
        return false;
      case "/help":
        note(HELP);
        break;
      case "/reset":
        this.conversation.reset();
        note("conversation cleared");
        break;
      case "/system":
        this.conversation.system = arg === "" ? undefined : arg;
        note(this.conversation.system === undefined ? "system prompt removed" : "system prompt set");
        break;
      case "/unsteer":
        await this.conversation.setSteering([]);
        this.refs = [];
        note("steering removed");
        break;
      case "/steer": {
        if (arg === "") throw new PersonaError("E_BAD_STEER_ARG", `usage: /steer ${STEER_SYNTAX}`);
        const refs = [...this.refs, ...parseSteer(arg)];
        await this.conversation.setSteering(refs);
        this.refs = refs;
        note(`steering: ${refs.map(formatSteeringRef).join(" + ")}`);
        break;
      }
      default:
        note(`unknown command ${command}; /help lists them`);
    }
    return true;
  }

  private async reply(userText: string): Promise<void> {
    const decoder = new TextDecoder();
    const stream = !this.opts.json;
    this.current = new AbortController();
    let result;
    try {
      result = await this.conversation.reply(userText, {
        signal: this.current.signal,
        onDropped: (n) => note(`(the ${n} oldest exchanges no longer fit the context and were left out)`),
        onPiece: stream ? (piece) => write(decoder.decode(piece, { stream: true })) : undefined,
      });
    } catch (e) {
      if (e instanceof PersonaError && e.code === "E_ABORTED") {
        if (stream) print(decoder.decode());
        note("(reply stopped; it is not kept in the conversation)");
        return;
      }
      throw e;
    } finally {
      this.current = undefined;
    }
    if (stream) print(decoder.decode());
    else {
      print(
        JSON.stringify({
          turn: result.turn,
          reply: result.text,
          tokens: result.tokens ? Array.from(result.tokens) : null,
          prompt_tokens: result.promptTokens,
          finish_reason: result.finishReason,
          steering: this.refs.map(formatSteeringRef),
          ...("persona" in result ? { persona: result.persona ?? null } : {}),
        }),
      );
    }
  }
}

/** `persona chat`: an interactive, steerable conversation in the terminal (or over a pipe). */
export function register(program: Command): void {
  withEngineFlags(
    withSamplingFlags(program
      .command("chat")
      .description("chat with a model in the terminal, optionally steered; /help lists the in-chat commands")
      .option("--steer <spec>", `steer every reply, repeatable: ${STEER_SYNTAX}`, collectSteer)
      .option("-s, --system <text>", "system prompt")
      .option("--json", "print one JSON line per reply (text, token ids, prompt size) instead of streaming text")
      .option("--server <url>", "talk to a running `persona serve` (or any OpenAI-compatible server) instead of loading --model; --steer then names served traits")
      .option("--api-key <key>", "Bearer key for --server (also PERSONA_API_KEY)"), { unit: "reply", maxTokens: 256, temperature: 0.7, shortTemperature: true, seedHelp: "random seed (turn i uses seed + i)" }),
    { modelOptional: true },
  )
    .addHelpText(
      "after",
      `
${HELP}

Without a terminal, lines are read from stdin and each reply is printed on its own, so a
conversation can be scripted.

Examples:
  persona chat --model demo
  persona chat --model demo --steer evil::3 --temperature 0
  printf 'Hi\\n/steer evil:5:3\\nHi again\\n/quit\\n' | persona chat --model demo --json
  persona chat --server http://127.0.0.1:8080 --steer evil::-3
`,
    )
    .action(async function (this: Command, opts: ChatFlags) {
      const refs = opts.steer ?? [];
      if (opts.server !== undefined) {
        const remote = new RemoteConversation({ url: opts.server, apiKey: opts.apiKey ?? process.env.PERSONA_API_KEY, system: opts.system, temperature: opts.temperature, maxTokens: opts.maxTokens, seed: opts.seed });
        const target = remoteTarget(remote);
        await target.setSteering(refs);
        return converse(new ChatSession(target, opts, refs), `${await remote.modelId()} at ${opts.server}`, refs);
      }
      if (opts.model === undefined) throw new PersonaError("E_USAGE", "give --model (a model to load) or --server (a running persona serve)");
      await withModel(this, { ...opts, model: opts.model }, async (model) => {
        const target = localTarget(model, opts);
        await target.setSteering(refs);
        await converse(new ChatSession(target, opts, refs), model.info.name, refs);
      });
    });
}

/** Reads lines (a terminal with a prompt, or a pipe) until /quit or end of input. */
async function converse(session: ChatSession, name: string, refs: SteeringRef[]): Promise<void> {
  const tty = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  const rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty });
  if (tty) {
    note(`chatting with ${name}${refs.length ? `, steering ${refs.map(formatSteeringRef).join(" + ")}` : ""}; /help for commands`);
    rl.on("SIGINT", () => {
      if (session.current) session.current.abort();
      else rl.close();
    });
    rl.setPrompt("> ");
    rl.prompt();
  }
  try {
    for await (const line of rl) {
      try {
        if (!(await session.handle(line))) break;
      } catch (e) {
        // A bad /steer or an unknown trait must not end the conversation, nor fail it: it was reported and refused.
        if (!(e instanceof PersonaError) || e.code === "E_ENGINE_CRASHED" || e.code === "E_DISPOSED") throw e;
        note(`persona: ${e.message} [${e.code}]`);
      }
      if (tty) rl.prompt();
    }
  } finally {
    rl.close();
  }
}
