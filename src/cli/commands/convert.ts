import { type Command, Option } from "commander";
import { OUT_TYPES, type OutType, convertHf } from "../../convert/hf.js";
import { convertLora } from "../../convert/lora.js";
import { refuseOverwrite } from "../args/out.js";
import { print, printJson } from "../output.js";
import { progress } from "../progress.js";

/** `persona convert hf|lora`: Hugging Face checkpoints and PEFT adapters → GGUF. */
export function register(program: Command): void {
  const convert = program.command("convert").description("convert Hugging Face checkpoints and PEFT LoRA adapters to GGUF");

  convert
    .command("hf")
    .description("a Hugging Face checkpoint (Llama 3/3.1, Qwen2/2.5, Qwen3: config.json, safetensors, tokenizer.json) → one GGUF model")
    .argument("<dir>", "checkpoint directory (as save_pretrained writes it)")
    .requiredOption("--out <file>", "output .gguf path")
    .addOption(new Option("--type <type>", "type of the weight matrices (norms and biases stay f32)").choices([...OUT_TYPES]).default("f16"))
    .option("--name <name>", "general.name (defaults to the checkpoint's name)")
    .option("--force", "overwrite the output file if it exists")
    .option("--json", "print stable JSON")
    .addHelpText(
      "after",
      `
Tensors stream through in blocks: converting needs little memory whatever the model's size.
For other quantisations (Q4_K_M …) run llama.cpp's llama-quantize on the f16 output.

Examples:
  persona convert hf ./Qwen2.5-7B-Instruct --out qwen2.5-7b-f16.gguf
  persona convert hf ./my-finetune --out my-finetune-q8.gguf --type q8_0
`,
    )
    .action(async (dir: string, opts: { out: string; type: OutType; name?: string; force?: boolean; json?: boolean }) => {
      await refuseOverwrite(opts.out, opts.force);
      let bar: ReturnType<typeof progress> | undefined;
      const r = await convertHf(dir, opts.out, {
        type: opts.type,
        ...(opts.name !== undefined ? { name: opts.name } : {}),
        onProgress: (done, total) => {
          bar ??= progress("converting", total);
          bar.tick();
          if (done === total) bar.stop();
        },
      });
      if (opts.json) return printJson({ out: opts.out, arch: r.arch, type: opts.type, tensors: r.tensors, n_layer: r.params.nLayer, n_embd: r.params.nEmbd, n_vocab: r.params.vocabSize });
      print(`wrote ${opts.out}: ${r.arch}, ${r.params.nLayer} layers × ${r.params.nEmbd}, ${r.params.vocabSize} tokens, ${r.tensors} tensors (${opts.type})`);
    });

  convert
    .command("lora")
    .description("a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors; rsLoRA and per-module ranks too) → a llama.cpp GGUF LoRA")
    .argument("<dir>", "adapter directory")
    .requiredOption("--base <model.gguf>", "the GGUF base model the adapter will be applied to (checked against it)")
    .requiredOption("--out <file>", "output .gguf path")
    .option("--force", "overwrite the output file if it exists")
    .option("--json", "print stable JSON")
    .addHelpText(
      "after",
      `
Examples:
  persona convert lora ./my-lora --base qwen2.5-7b-f16.gguf --out my-lora.gguf
  persona chat --model qwen2.5-7b-f16.gguf --lora my-lora.gguf:0.8
`,
    )
    .action(async (dir: string, opts: { base: string; out: string; force?: boolean; json?: boolean }) => {
      await refuseOverwrite(opts.out, opts.force);
      const r = await convertLora(dir, opts.base, opts.out);
      if (opts.json) return printJson({ out: opts.out, arch: r.arch, alpha: r.alpha, modules: r.modules });
      const ranks = [...new Set(r.modules.map((m) => m.rank))].join("/");
      print(`wrote ${opts.out}: ${r.modules.length} adapted weights (rank ${ranks}) for ${r.arch}${r.alpha === 0 ? ", PEFT scales folded into B" : `, alpha ${r.alpha}`}`);
    });
}

