import { mkdir } from "node:fs/promises";
import path from "node:path";
import { type Command, Option } from "commander";
import { PersonaError } from "../../errors.js";
import { JUDGE_SPEC_HELP } from "../../judge/resolve.js";
import { gradedMonitorPrompts, monitorJson, monitorTrait, readMonitorPrompts, writeMonitorReport } from "../../pipeline/monitor.js";
import { storeVectorsMeta } from "../../pipeline/sweep.js";
import { parseVectorRef } from "../../vectors/format.js";
import { loadVectorSource } from "../../vectors/steer.js";
import { intArg } from "../args/numbers.js";
import { withEngineFlags, withModel } from "../engine.js";
import { judgeSpecFor, loadTraitRef } from "../judge.js";
import { note, print, printJson, table } from "../output.js";
import { rolloutProgress } from "../progress.js";
import { withSamplingFlags } from "../args/sampling.js";
import { noteShards, refuseUntravelled, withQueue, withQueueFlag } from "../args/queue.js";
import type { LoraAdapter } from "../../engine/lora.js";

interface MonitorFlags {
  model: string;
  trait: string;
  vectors?: string;
  layer?: number;
  graded?: boolean;
  prompts?: string;
  questions?: number;
  samples: number;
  judge?: string;
  out: string;
  temperature: number;
  maxTokens: number;
  seed: number;
  restart?: boolean;
  json?: boolean;
  threads?: number;
  chunk?: number;
  queue?: string;
  lora?: LoraAdapter[];
}

const fmt = (x: number | null) => (x === null ? "-" : x.toFixed(3));

/** `persona monitor`: does the last prompt token's projection predict the trait before the model answers? */
export function register(program: Command): void {
  withEngineFlags(
    withSamplingFlags(withQueueFlag(program
      .command("monitor"))
      .description("predict a trait before generation: last-prompt-token projection vs the judged trait score of the replies, Pearson r per layer")
      .requiredOption("-t, --trait <trait>", "trait name, directory or file")
      .option("--vectors <file>", "vectors FILE.safetensors[#TENSOR] (default: the trait's registered vectors, response_avg)")
      .option("-l, --layer <n>", "report this layer (default: the most predictive one)", intArg(0))
      .addOption(new Option("--graded", "the trait's graded system prompts × its evaluation questions (neg / none / pos prompts when it has none)").conflicts("prompts"))
      .option("--prompts <file>", 'JSONL of {"messages": [...]} conversations without the reply (optional "level", "group")')
      .option("--questions <n>", "with --graded: use only the first n evaluation questions", intArg(1))
      .option("-n, --samples <n>", "replies per prompt", intArg(1), 5)
      .option("-j, --judge <spec>", `judge: ${JUDGE_SPEC_HELP} (default: demo for the demo traits)`)
      .requiredOption("-o, --out <dir>", "run directory: rollouts, judge cache, monitor.json, monitor.html (re-running resumes)")
      .option("--chunk <n>", "most replies per batched generate call, and per shard with --queue (default: all in one)", intArg(1))
      .option("--restart", "set aside a run directory that holds another configuration instead of refusing")
      .option("--json", 'print JSON: {"trait", "vectors", "layer", "pearson_r", "per_layer": [{"layer", "pearson_r"}], "points": [{"messages", "projection", "trait_score", "coherence"}]}'), { unit: "reply", maxTokens: 256 }),
  )
    .addHelpText(
      "after",
      `
For every prompt the projection of the last prompt token (the chat template with the generation
prompt) on the trait's unit vector is taken at every layer before anything is generated; then
--samples replies are generated and judged. Pearson r between projection and mean trait score
across prompts says how well the model's state predicts the trait it is about to show.
Replies are generated with exact numerics (F32 KV cache, no flash attention; about 1.7× the CPU
time of eval's default on the demo model, and twice the KV memory), so a killed run resumes with
only the missing replies and ends as an uninterrupted run would. Run directories made before
this (their run.json records a shard size) resume only with --restart.

Examples:
  persona monitor --model demo --trait evil --graded --questions 5 --out runs/monitor-evil
  persona monitor --model demo --trait sycophantic --graded --layer 3 --samples 3 --out runs/mon --json
  persona monitor --model qwen.gguf --trait traits/evil --prompts prompts.jsonl --judge openai:gpt-4.1-mini --out runs/m
  persona monitor --model qwen.gguf --trait traits/evil --graded --judge openai:gpt-4.1-mini --chunk 64 \
    --queue redis://10.0.0.5:6379 --out runs/m     # replies on persona workers, projections here

With --queue the replies are generated and judged on \`persona worker\` processes in shards of
--chunk; the projections (one forward pass per prompt) are taken here.
`,
    )
    .action(async function (this: Command, opts: MonitorFlags) {
      if (!opts.graded && !opts.prompts) throw new PersonaError("E_BAD_INPUT", "give --graded or --prompts FILE.jsonl");
      const loaded = await loadTraitRef(opts.trait);
      const { trait } = loaded;
      const prompts = opts.prompts ? await readMonitorPrompts(opts.prompts) : gradedMonitorPrompts(trait, trait.eval.questions.slice(0, opts.questions));
      const judgeSpec = judgeSpecFor(loaded, opts.judge);
      refuseUntravelled(opts, judgeSpec);
      await mkdir(opts.out, { recursive: true });
      await withModel(this, { ...opts, judgeRef: { spec: judgeSpec, runDir: opts.out } }, async (model, _engine, judge) => withQueue(opts.queue, async (runner) => {
        const source = opts.vectors ?? trait.name;
        const v = await loadVectorSource(source, model.info);
        const tensor = (opts.vectors ? parseVectorRef(opts.vectors).tensor : undefined) ?? "response_avg";
        const vectors = `${v.path}#${tensor}`;
        const bar = rolloutProgress("monitoring");
        const result = await monitorTrait(model, {
          trait,
          judge,
          vectors: v.matrix,
          vectorsSource: vectors,
          prompts,
          layer: opts.layer,
          samples: opts.samples,
          temperature: opts.temperature,
          maxTokens: opts.maxTokens,
          seed: opts.seed,
          runDir: opts.out,
          restart: opts.restart,
          runner,
          judgeSpec,
          shardRequests: opts.chunk,
          onProgress: (p) => bar.update(p),
        }).finally(() => bar.stop());
        const report = await writeMonitorReport(opts.out, result, { model: model.info.name, vectors, judge: judge.id, samples: opts.samples });
        // The most predictive layer is where `persona shift` projects by default.
        if (opts.layer === undefined && result.pearsonR !== null) {
          const stored = await storeVectorsMeta(v.path, { monitorLayer: { tensor, layer: result.layer, pearsonR: result.pearsonR } }, model.info, trait.name);
          if (stored.stored !== "none") note(`stored monitor_layer ${result.layer} (${tensor}) in ${stored.path}`);
        }
        if (opts.json) return printJson({ ...monitorJson(result, vectors), ...(runner && { shards: result.shards }) });
        print(table(["layer", "Pearson r"], result.perLayer.map((x) => [x.layer === result.layer ? `${x.layer} *` : String(x.layer), fmt(x.pearsonR)])));
        note(`${trait.name}: r = ${fmt(result.pearsonR)} at layer ${result.layer}${opts.layer === undefined ? " (most predictive)" : ""}, ${prompts.length} prompts × ${opts.samples} replies${result.resumed ? " (resumed)" : ""}`);
        note(`report: ${path.relative(process.cwd(), report.html)}`);
        if (runner) noteShards(result.shards);
      }));
    });
}
