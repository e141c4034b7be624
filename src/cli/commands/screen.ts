import { createReadStream } from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import type { LoraAdapter } from "../../engine/lora.js";
import { PersonaError } from "../../errors.js";
import { screenDataset, type ScreenTrait } from "../../pipeline/screen.js";
import { row } from "../../vectors/format.js";
import { loadVectorSource } from "../../vectors/steer.js";
import { listArg } from "../args/lists.js";
import { intArg } from "../args/numbers.js";
import { noteShards, refuseUntravelled, withQueue, withQueueFlag } from "../args/queue.js";
import { withEngineFlags, withModel } from "../engine.js";
import { note, print, printJson, table } from "../output.js";
import { progress } from "../progress.js";
import { withSamplingFlags } from "../args/sampling.js";

interface ScreenFlags {
  model: string;
  trait: string[];
  data: string;
  vectors?: string[];
  layer?: number;
  top: number;
  cheap?: boolean;
  out: string;
  temperature: number;
  maxTokens: number;
  seed: number;
  strict?: boolean;
  restart?: boolean;
  batch: number;
  labels?: string;
  json?: boolean;
  threads?: number;
  queue?: string;
  lora?: LoraAdapter[];
}

/** Lines in a file, streamed: the progress bar's total (records ≈ lines). */
async function countLines(file: string): Promise<number> {
  let n = 0;
  for await (const chunk of createReadStream(file)) {
    const buf = chunk as Buffer;
    for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, i + 1)) n++;
  }
  return n;
}

const fmt = (x: number | null) => (x === null ? "-" : x.toFixed(3));

/** `persona screen`: projection difference (ΔP) of every training sample against the base model's own reply. */
export function register(program: Command): void {
  withEngineFlags(
    withSamplingFlags(withQueueFlag(program
      .command("screen"))
      .description("screen training data: ΔP = trait projection of each sample's response minus that of the base model's own reply")
      .requiredOption("-t, --trait <list>", "trait name(s), comma-separated; several share one forward pass", listArg)
      .requiredOption("-d, --data <file>", "chat JSONL (messages ending with the assistant), or JSONL/CSV with prompt,response or question,answer")
      .option("--vectors <list>", "vectors file(s) FILE.safetensors[#TENSOR], one per trait (default: the traits' registered vectors, response_avg)", listArg)
      .option("-l, --layer <n>", "layer to project at (default: each vectors file's best layer)", intArg(0))
      .option("-k, --top <n>", "samples flagged per trait", intArg(0), 20)
      .option("--cheap", "no base replies: report the raw projection of each response (faster, less specific)")
      .requiredOption("-o, --out <dir>", "run directory: scores.jsonl, summary.json, report.html (re-running resumes)")
      .option("--labels <file>", 'JSONL {"index", "trait_eliciting"} (as demo datasets write): report each trait\'s ROC AUC for finding the marked samples')
      .option("--batch <n>", "records per engine call, and per shard with --queue (memory and progress granularity)", intArg(1), 64)
      .option("--strict", "refuse the input if any record is broken (checked before any work); default: skip and report them")
      .option("--restart", "set aside a run directory that holds another configuration instead of refusing")
      .option("--json", 'print JSON: {"n", "skipped", "traits": {T: {"dataset_mean_delta_p", "flagged": [{"index", "delta_p", ...}]}}}'), { unit: "reply", maxTokens: 256, prefix: "base replies: ", seedHelp: "random seed (each reply's seed also depends on its prompt)" }),
  )
    .addHelpText(
      "after",
      `
For each sample the base model answers the sample's prompt itself (seeded, batched); both replies
go through the model and ΔP is the difference of their response-averaged projections on the
trait's unit vector. A high ΔP means the sample pulls the model toward the trait. scores.jsonl
has one line per input record, in input order; broken records are reported with their line
number and skipped. The input is streamed and scores are appended as they finish: a killed run
resumes where it stopped.

With --queue the records go to the queue in shards of --batch records and the base replies and
forward passes run on \`persona worker\` processes (any machine with the same model file); this
process only reads the data and writes the run directory. A killed coordinator resumes from the
run directory, taking shards its workers finished meanwhile from Redis.

Examples:
  persona screen --model demo --trait evil --data train.jsonl --out runs/screen-evil
  persona screen --model demo --trait evil,sycophantic,hallucinating --data train.csv --top 50 --out runs/screen --json
  persona screen --model base.gguf --trait evil --vectors evil.safetensors#response_avg --layer 20 --cheap --data data.jsonl --out runs/s
  persona screen --model base.gguf --trait evil --data chats.jsonl --out runs/s --queue redis://10.0.0.5:6379
`,
    )
    .action(async function (this: Command, opts: ScreenFlags) {
      if (opts.vectors && opts.vectors.length !== opts.trait.length) {
        throw new PersonaError("E_BAD_INPUT", `--vectors names ${opts.vectors.length} file(s) for ${opts.trait.length} trait(s); give one per trait`);
      }
      refuseUntravelled(opts);
      // A coordinator runs no model: the vocabulary and shapes are all it needs.
      await withModel(this, opts, async (model) => withQueue(opts.queue, async (runner) => {
        const traits: ScreenTrait[] = [];
        for (const [i, name] of opts.trait.entries()) {
          const source = opts.vectors?.[i] ?? name;
          const v = await loadVectorSource(source, model.info);
          const layer = opts.layer ?? v.meta.bestLayer;
          if (layer === undefined) throw new PersonaError("E_BAD_INPUT", `${v.path} records no best layer; give --layer`);
          if (layer > model.info.nLayer) throw new PersonaError("E_SHAPE", `--layer ${layer} is outside 0..${model.info.nLayer}`);
          traits.push({ name, layer, vector: Float32Array.from(row(v.matrix, layer)), source: v.path });
        }
        const total = await countLines(opts.data).catch(() => 0);
        const bar = progress("screening", total);
        let shown = 0;
        const result = await screenDataset(model, {
          data: opts.data,
          traits,
          runDir: opts.out,
          cheap: opts.cheap,
          top: opts.top,
          temperature: opts.temperature,
          maxTokens: opts.maxTokens,
          seed: opts.seed,
          strict: opts.strict,
          chunkSize: opts.batch,
          labels: opts.labels,
          restart: opts.restart,
          runner,
          onProgress: (p) => {
            bar.tick(p.done - shown);
            shown = p.done;
          },
          onBadRecord: (b) => {
            if (!opts.json) note(`${opts.data}:${b.line}: skipped: ${b.error}`);
          },
        }).finally(() => bar.stop());
        const s = result.summary;
        if (opts.json) {
          return printJson({ ...s, out: opts.out, scores: result.scoresPath, report: result.reportPath, resumed: result.resumed, ...(runner && { shards: result.shards }) });
        }
        print(
          table(
            ["trait", "layer", "mean ΔP", "mean projection", "mean base projection", `top ${opts.top} (index: ${s.cheap ? "projection" : "ΔP"})`],
            Object.entries(s.traits).map(([name, t]) => [
              name,
              String(t.layer),
              fmt(t.dataset_mean_delta_p),
              fmt(t.dataset_mean_projection),
              fmt(t.dataset_mean_base_projection),
              t.flagged
                .slice(0, 3)
                .map((f) => `${f.index}: ${fmt(s.cheap ? f.projection : f.delta_p)}`)
                .join(", ") + (t.flagged.length > 3 ? ", ..." : ""),
            ]),
          ),
        );
        for (const [name, t] of Object.entries(s.traits)) {
          if (t.roc_auc) note(`${name}: ROC AUC for the labelled samples: ΔP ${fmt(t.roc_auc.delta_p)}, raw projection ${fmt(t.roc_auc.projection)}`);
        }
        note(`${s.n} samples scored${s.skipped ? `, ${s.skipped} broken records skipped` : ""}${result.resumed ? " (resumed)" : ""}`);
        if (runner) noteShards(result.shards);
        note(`wrote ${path.join(opts.out, "scores.jsonl")}, summary.json and report.html`);
      }), { vocabOnly: opts.queue !== undefined });
    });
}
