import type { Command } from "commander";
import { print, printJson, table } from "../output.js";
import { withEngineFlags, withModel } from "../engine.js";

/** `persona model info`: what a GGUF model is, read without loading its weights. */
export function register(program: Command): void {
  const model = program.command("model").description("inspect models");
  withEngineFlags(
    model
      .command("info")
      .description("architecture, sizes and chat template of a GGUF model (reads metadata and vocabulary only)")
      .option("--json", "print stable JSON"),
  )
    .addHelpText("after", "\nExamples:\n  persona model info --model demo\n  persona model info --model qwen2.5-7b-instruct-q4_k_m.gguf --json\n")
    .action(async function (this: Command, opts: { model: string; json?: boolean; threads?: number }) {
      await withModel(
        this,
        opts,
        async (m) => {
          const i = m.info;
          const out = {
            path: i.path,
            name: i.name,
            architecture: i.architecture,
            n_layer: i.nLayer,
            n_embd: i.nEmbd,
            n_head: i.nHead,
            n_vocab: i.nVocab,
            n_ctx_train: i.nCtxTrain,
            file_size: i.fileSize,
            chat_template: i.chatTemplate !== null,
            bos_token: i.bosText || null,
            eos_token: i.eosText || null,
          };
          if (opts.json) return printJson(out);
          print(
            table(
              ["field", "value"],
              Object.entries(out).map(([k, v]) => [k, String(v)]),
            ),
          );
          print(`layers for steering/vectors: 0..${i.nLayer} (0 = embeddings; steer 1..${i.nLayer})`);
        },
        { vocabOnly: true },
      );
    });
}
