import type { Command } from "commander";
import { hubEnv } from "../../hub/cache.js";
import { parseHubRef, pullModel } from "../../hub/pull.js";
import { print, printJson } from "../output.js";
import { downloadProgress } from "../progress.js";

/** `persona pull`: download a GGUF model from the Hugging Face hub into the hub's shared cache. */
export function register(program: Command): void {
  program
    .command("pull")
    .description("download a GGUF model from the Hugging Face hub into the hub's cache (shared with other hub tools; resumes cut transfers)")
    .argument("<ref>", "OWNER/NAME[:QUANT] or OWNER/NAME/FILE.gguf (an hf: prefix is allowed)")
    .option("--revision <rev>", "branch, tag or commit", "main")
    .option("--offline", "only look in the local cache (also HF_HUB_OFFLINE=1)")
    .option("--json", "print stable JSON")
    .addHelpText(
      "after",
      `
Environment: HF_TOKEN (gated/private repos), HF_HOME / HF_HUB_CACHE (cache location),
HF_ENDPOINT (a mirror), HF_HUB_OFFLINE=1 (never touch the network).
Without :QUANT a repo with several GGUFs gives Q4_K_M (then Q4_K_S, Q5_K_M, Q8_0, Q4_0).
Split GGUFs (-00001-of-0000N) are fetched whole; the first part is the model path.

Examples:
  persona pull Qwen/Qwen2.5-7B-Instruct-GGUF:Q4_K_M
  persona pull bartowski/Meta-Llama-3.1-8B-Instruct-GGUF/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf
  persona extract --model hf:Qwen/Qwen2.5-7B-Instruct-GGUF:Q4_K_M --trait evil --judge openai:gpt-4.1-mini
`,
    )
    .action(async (ref: string, opts: { revision: string; offline?: boolean; json?: boolean }) => {
      const r = await pullModel(parseHubRef(ref), { revision: opts.revision, ...(opts.offline ? { offline: true } : {}), onProgress: downloadProgress() });
      if (opts.json) return printJson({ repo: r.repo, commit: r.commit, model_path: r.modelPath, files: r.files, downloaded_bytes: r.downloaded, cache_dir: hubEnv().cacheDir });
      print(`${r.repo}@${r.commit.slice(0, 8)}: ${r.modelPath}${r.files.length > 1 ? ` (+${r.files.length - 1} more parts)` : ""}${r.downloaded === 0 ? " (cached)" : ""}`);
    });
}
