import type { Command } from "commander";
import { captureActivationsToFile, countCaptureInputs, readCaptureInputs } from "../../pipeline/activations.js";
import { loadSteering, type SteeringRef } from "../../vectors/steer.js";
import { intArg } from "../args/numbers.js";
import { collectSteer, STEER_SYNTAX } from "../args/steer.js";
import { withEngineFlags, withModel } from "../engine.js";
import { note, print, printJson } from "../output.js";
import { checkOutputFile } from "../args/paths.js";
import { progress } from "../progress.js";

interface ActivationsFlags {
  model: string;
  input: string;
  out: string;
  steer?: SteeringRef[];
  batchTokens?: number;
  json?: boolean;
  force?: boolean;
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
      .option("--force", "overwrite --out if it exists")
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
      // Validated (and counted) before the model loads: a bad line fails in a second, not after the work.
      const count = await countCaptureInputs(opts.input);
      await checkOutputFile(opts.out, "--out", opts.force);
      await withModel(this, opts, async (model) => {
        const { nCtxTrain } = model.info;
        const long: string[] = [];
        const steering = await loadSteering(opts.steer ?? [], model);
        const samples: { tokens: number[]; prompt_length: number }[] = [];
        const bar = progress("capturing", count);
        const { shape } = await captureActivationsToFile(model, readCaptureInputs(opts.input), opts.out, {
          count,
          steering,
          batchTokens: opts.batchTokens,
          // Only --json reports the tokens; without it nothing per sample is kept.
          onEncoded: (i, s) => {
            if (s.tokens.length > nCtxTrain) long.push(`line ${i + 1}: ${s.tokens.length} tokens`);
            if (opts.json) samples.push({ tokens: Array.from(s.tokens), prompt_length: s.promptLength });
          },
          onCaptured: () => bar.tick(),
        });
        bar.stop();
        if (long.length > 0) {
          // It runs (the context grows to fit), but positions past the trained context give activations the model never learned.
          note(
            `warning: ${long.length} sample${long.length > 1 ? "s are" : " is"} longer than the ${nCtxTrain} tokens the model was trained on ` +
              `(${long.slice(0, 5).join(", ")}${long.length > 5 ? ", ..." : ""}); their activations may be meaningless`,
          );
        }
        if (opts.json) return printJson({ out: opts.out, shape, samples });
        const [n, layers, nEmbd] = shape;
        print(`wrote ${opts.out}: ${n} samples × ${layers} layers × ${nEmbd}`);
      });
    });
}
