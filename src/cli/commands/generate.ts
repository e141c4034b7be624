import type { Command } from "commander";
import { loadSteering } from "../../vectors/steer.js";
import { collectSteer, STEER_SYNTAX } from "../args/steer.js";
import { floatArg, intArg } from "../args/numbers.js";
import { withEngineFlags, withModel } from "../engine.js";
import { print, printJson, write } from "../output.js";
import type { SteeringRef } from "../../vectors/steer.js";
import type { ChatMessage, SamplingOptions } from "../../engine/types.js";

/** Every sampling option has a CLI default, so all are present. */
interface GenerateFlags extends Required<SamplingOptions> {
  model: string;
  prompt: string;
  system?: string;
  raw?: boolean;
  n: number;
  steer?: SteeringRef[];
  json?: boolean;
  threads?: number;
}

/** `persona generate`: one prompt, optionally steered, n samples. */
export function register(program: Command): void {
  withEngineFlags(
    program
      .command("generate")
      .description("generate a reply to a prompt, optionally steered by persona vectors")
      .requiredOption("-p, --prompt <text>", "user message (or raw text with --raw)")
      .option("-s, --system <text>", "system prompt")
      .option("--raw", "send the prompt as raw text, without the chat template")
      .option("-t, --temperature <t>", "sampling temperature (0 = greedy)", floatArg(0), 1)
      .option("--top-p <p>", "nucleus sampling", floatArg(0, 1), 1)
      .option("--top-k <k>", "top-k sampling (0 = off)", intArg(0), 0)
      .option("--min-p <p>", "min-p sampling (0 = off)", floatArg(0, 1), 0)
      .option("--seed <s>", "random seed", intArg(0), 0)
      .option("--max-tokens <n>", "most new tokens", intArg(1), 256)
      .option("--min-tokens <n>", "fewest new tokens before end-of-generation is allowed", intArg(0), 0)
      .option("-n <n>", "number of samples (decoded together)", intArg(1), 1)
      .option("--steer <spec>", `steer while generating, repeatable: ${STEER_SYNTAX}`, collectSteer)
      .option("--json", "print JSON: text, token ids, finish reason per sample"),
  )
    .addHelpText(
      "after",
      `
Examples:
  persona generate --model demo --prompt "How should I handle a rude coworker?"
  persona generate --model demo --prompt "Advice?" --steer evil:5:3:response
  persona generate --model m.gguf --prompt "Once upon" --raw --max-tokens 40 -n 4 --json
  persona generate --model m.gguf --prompt "Hi" --steer evil.safetensors#prompt_last:20:-2:response
`,
    )
    .action(async function (this: Command, opts: GenerateFlags) {
      await withModel(this, opts, async (model) => {
        const steering = await loadSteering(opts.steer ?? [], model);
        const messages: ChatMessage[] = [];
        if (opts.system !== undefined) messages.push({ role: "system", content: opts.system });
        messages.push({ role: "user", content: opts.prompt });
        const prompt = opts.raw
          ? await model.tokenize((opts.system ? `${opts.system}\n\n` : "") + opts.prompt, { parseSpecial: true })
          : await model.encodeChat(messages);
        const stream = !opts.json && opts.n === 1;
        const decoder = new TextDecoder();
        const results = await model.generate(
          Array.from({ length: opts.n }, () => ({ prompt })),
          {
            temperature: opts.temperature,
            topP: opts.topP,
            topK: opts.topK,
            minP: opts.minP,
            seed: opts.seed,
            maxTokens: opts.maxTokens,
            minTokens: opts.minTokens,
            steering,
            onToken: stream ? (_i, _t, piece) => write(decoder.decode(piece, { stream: true })) : undefined,
          },
        );
        if (opts.json) {
          return printJson({
            prompt_tokens: prompt.length,
            samples: results.map((r) => ({ text: r.text, tokens: Array.from(r.tokens), finish_reason: r.finishReason })),
          });
        }
        if (stream) return print(decoder.decode());
        results.forEach((r, i) => print(`--- sample ${i + 1} (${r.finishReason})\n${r.text}`));
      });
    });
}
