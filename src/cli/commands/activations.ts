import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { z } from "zod";
import type { CaptureSample } from "../../engine/types.js";
import { PersonaError } from "../../errors.js";
import { writeSafetensors } from "../../vectors/safetensors.js";
import { loadSteering, type SteeringRef } from "../../vectors/steer.js";
import { intArg } from "../args/numbers.js";
import { collectSteer, STEER_SYNTAX } from "../args/steer.js";
import { withEngineFlags, withModel } from "../engine.js";
import { print, printJson } from "../output.js";
import { progress } from "../progress.js";

const Line = z.union([
  z.object({ prompt: z.string(), response: z.string() }).strict(),
  z.object({ messages: z.array(z.object({ role: z.string(), content: z.string() })).min(2) }).strict(),
]);

/** Reads pairs.jsonl: `{"prompt","response"}` (raw text) or `{"messages":[...]}` (templated). */
export async function readPairs(file: string): Promise<z.infer<typeof Line>[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    throw new PersonaError("E_NOT_FOUND", `cannot read ${file}`);
  }
  const out: z.infer<typeof Line>[] = [];
  for (const [i, raw] of text.split("\n").entries()) {
    if (raw.trim() === "") continue;
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      throw new PersonaError("E_BAD_FORMAT", `${file}:${i + 1}: not valid JSON`);
    }
    const parsed = Line.safeParse(json);
    if (!parsed.success) {
      throw new PersonaError("E_BAD_FORMAT", `${file}:${i + 1}: expected {"prompt","response"} or {"messages":[...]} with string fields`);
    }
    out.push(parsed.data);
  }
  if (out.length === 0) throw new PersonaError("E_BAD_FORMAT", `${file} has no samples`);
  return out;
}

interface ActivationsFlags {
  model: string;
  input: string;
  out: string;
  steer?: SteeringRef[];
  batchTokens?: number;
  json?: boolean;
  threads?: number;
}

/** `persona activations`: residual reductions of given (prompt, response) pairs at every layer. */
export function register(program: Command): void {
  withEngineFlags(
    program
      .command("activations")
      .description("capture per-layer residual means (response, prompt) and the last prompt token for each pair")
      .requiredOption("-i, --input <file.jsonl>", 'one {"prompt","response"} (raw text) or {"messages":[...]} (chat template) per line')
      .requiredOption("-o, --out <file.safetensors>", "output: response_avg, prompt_avg, prompt_last as float32 [n_samples, n_layer+1, n_embd]")
      .option("--steer <spec>", `steer while capturing, repeatable: ${STEER_SYNTAX}`, collectSteer)
      .option("--batch-tokens <n>", "tokens per forward pass", intArg(1))
      .option("--json", "print JSON with each sample's token ids and prompt length"),
  )
    .addHelpText(
      "after",
      `
The prompt/response boundary is the token count of the prompt alone (raw pairs) or of the
templated conversation before the last assistant message (messages).

Examples:
  persona activations --model demo --input pairs.jsonl --out acts.safetensors
  persona activations --model m.gguf -i chats.jsonl -o acts.safetensors --steer evil.safetensors:20:2 --json
`,
    )
    .action(async function (this: Command, opts: ActivationsFlags) {
      const lines = await readPairs(opts.input);
      await withModel(this, opts, async (model) => {
        const steering = await loadSteering(opts.steer ?? [], model);
        const samples: CaptureSample[] = [];
        for (const l of lines) {
          samples.push("messages" in l ? await model.encodeConversation(l.messages) : await model.encodePair(l.prompt, l.response));
        }
        const { nLayer, nEmbd } = model.info;
        const per = (nLayer + 1) * nEmbd;
        const n = samples.length;
        const tensors = {
          response_avg: new Float32Array(n * per),
          prompt_avg: new Float32Array(n * per),
          prompt_last: new Float32Array(n * per),
        };
        const bar = progress("capturing", n);
        await model.capture(samples, {
          steering,
          batchTokens: opts.batchTokens,
          onSample: (i, a) => {
            tensors.response_avg.set(a.responseAvg, i * per);
            tensors.prompt_avg.set(a.promptAvg, i * per);
            tensors.prompt_last.set(a.promptLast, i * per);
            bar.tick();
          },
        });
        bar.stop();
        const shape = [n, nLayer + 1, nEmbd];
        await writeSafetensors(
          opts.out,
          new Map(Object.entries(tensors).map(([k, data]) => [k, { shape, data }])),
          { model: model.info.name, architecture: model.info.architecture, layers: "0 = embeddings, l = residual after block l-1" },
        );
        if (opts.json) {
          return printJson({
            out: opts.out,
            shape,
            samples: samples.map((s) => ({ tokens: Array.from(s.tokens), prompt_length: s.promptLength })),
          });
        }
        print(`wrote ${opts.out}: ${n} samples × ${nLayer + 1} layers × ${nEmbd}`);
      });
    });
}
