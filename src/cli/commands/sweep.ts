
import { type Command, Option } from "commander";
import type { Positions } from "../../engine/steering.js";
import { PersonaError } from "../../errors.js";
import { runSweep, storeBestLayer } from "../../pipeline/sweep.js";
import { sweepJson, writeSweepReport } from "../../report/sweep.js";
import { loadVectorSource } from "../../vectors/steer.js";
import { selectTensor } from "../../vectors/format.js";
import { floatArg, intArg } from "../args/numbers.js";
import { DEFAULT_POSITIONS } from "../args/steer.js";
import { withEngineFlags, withModel } from "../engine.js";
import { formatStats, note, print, printJson, table } from "../output.js";
import { rolloutProgress } from "../progress.js";
import { parseCoefList, parseLayerList } from "../args/lists.js";
import type { TraitSplitName } from "../../traits/registry.js";
import { splitOption } from "../args/trait.js";
import { judgeSpecFor, loadTraitRef, openJudge } from "../judge.js";
import { withSamplingFlags } from "../args/sampling.js";
import { noteShards, refuseUntravelled, withQueue, withQueueFlag } from "../args/queue.js";
import type { LoraAdapter } from "../../engine/lora.js";
import type { ShardStats } from "../../queue/runner.js";

interface SweepFlags {
  model: string;
  trait: string;
  split?: TraitSplitName;
  vectors?: string;
  layers: "all" | number[];
  coefs: number[];
  judge?: string;
  samples: number;
  questions?: number;
  coherenceFloor: number;
  positions: Positions;
  promptState?: number;
  temperature: number;
  maxTokens: number;
  seed: number;
  chunk?: number;
  out?: string;
  restart?: boolean;
  update: boolean;
  json?: boolean;
  threads?: number;
  queue?: string;
  lora?: LoraAdapter[];
}

/** `persona sweep`: layers × coefficients steering grid, best layer, HTML + JSON report. */
export function register(program: Command): void {
  withEngineFlags(
    withSamplingFlags(withQueueFlag(program
      .command("sweep"))
      .description("evaluate steering over layers × coefficients, pick the best layer and write a report")
      .requiredOption("-t, --trait <trait>", "trait name, directory or file")
      .addOption(splitOption())
      .option("--vectors <file>", "vectors file (FILE.safetensors[#TENSOR], .pt) or registered trait name (default: the trait's registered vectors)")
      .option("--layers <list>", 'layers to steer: "all" or e.g. 4,6-9', parseLayerList, "all" as const)
      .requiredOption("--coefs <list>", "steering coefficients, e.g. 0,1,2,4 (use --coefs=-2,-1,1 for negatives)", parseCoefList)
      .option("-j, --judge <spec>", "judge (default: demo for the demo traits)")
      .option("-n, --samples <n>", "rollouts per question and cell", intArg(1), 10)
      .option("--questions <n>", "use only the first n evaluation questions", intArg(1))
      .option("--coherence-floor <x>", "least mean coherence for a cell to count toward the best layer", floatArg(0, 100), 50)
      .addOption(new Option("--positions <where>", "where the vector is added (response: the last prompt token and every generated token, the reference's steering)").choices(["response", "prompt", "all"]).default(DEFAULT_POSITIONS))
      .option("--prompt-state <ratio>", "also steer the prompt's persona state: each cell adds ratio × coef × the same file's prompt_last at its layer on the prompt (0.5 on the demo model)", floatArg(-100, 100))
      .option("--chunk <n>", "most rollouts per batched generate call, and per shard with --queue, in whole cells (default 4096)", intArg(1))
      .option("-o, --out <dir>", "run directory: report, finished cells, judge cache (default runs/sweep-<trait>)")
      .option("--restart", "discard a run in --out that used another configuration")
      .option("--no-update", "do not store the best layer in the vectors file")
      .option("--json", 'print JSON: grid [{layer, coef, trait_score, coherence}], best_layer, baseline, ...'), { unit: "rollout", maxTokens: 1000 }),
  )
    .addHelpText(
      "after",
      `
Every cell is the trait's evaluation questions × --samples rollouts under steering coef·v at one
layer; coefficient 0 is the unsteered baseline, evaluated once. The best layer is the one whose
largest move of the trait score in the coefficient's direction, among cells with mean coherence
≥ --coherence-floor, is largest; it is stored as best_layer in the vectors file, so later
--steer SOURCE::COEF uses it. Files shipped with a model (such as the demo's) are never rewritten:
the best layer goes into your copy in the data directory, which then stands for the trait
(\`persona vectors list\` shows which file a trait name resolves to). Re-running with the same settings resumes from finished cells.

Examples:
  persona sweep --model demo --trait evil --coefs 0,2,4,6,8
  persona sweep --model demo --trait evil --layers 2-5 --coefs=-4,-2,2,4 --samples 4 --json
  persona sweep --model demo --trait sycophantic --layers 5 --coefs=-2,-1.5,1.5,2 --prompt-state 0.5
  persona sweep --model qwen.gguf --trait traits/evil --vectors evil.safetensors --layers 12,16,20 \\
    --coefs 0.5,1,1.5,2 --judge openai:gpt-4.1-mini --out runs/sweep-evil
  persona sweep --model qwen.gguf --trait traits/evil --layers 8-24 --coefs 1,2,4 --chunk 100 \
    --judge openai:gpt-4.1-mini --queue redis://10.0.0.5:6379 --out runs/sweep-evil   # cells on persona workers
`,
    )
    .action(async function (this: Command, opts: SweepFlags) {
      const loaded = await loadTraitRef(opts.trait, opts.split);
      const { trait } = loaded;
      const out = opts.out ?? `runs/sweep-${trait.name}`;
      const judgeSpec = judgeSpecFor(loaded, opts.judge);
      refuseUntravelled(opts, judgeSpec);
      // With --queue this process only plans and merges: the vocabulary and shapes are all it needs.
      await withModel(this, opts, async (model, engine) => withQueue(opts.queue, async (runner) => {
        const source = opts.vectors ?? trait.name;
        const vectors = await loadVectorSource(source, model.info);
        const promptState =
          opts.promptState === undefined ? undefined : { matrix: selectTensor(vectors.file, "prompt_last"), tensor: "prompt_last", ratio: opts.promptState };
        const { nLayer } = model.info;
        const layers = opts.layers === "all" ? Array.from({ length: nLayer }, (_, i) => i + 1) : opts.layers;
        for (const l of layers) {
          if (l < 1 || l > nLayer) throw new PersonaError("E_SHAPE", `--layers: layer ${l} is out of range 1..${nLayer} (layer 0, the embeddings, cannot be steered)`);
        }
        const questions = trait.eval.questions.slice(0, opts.questions);
        const bar = rolloutProgress("sweeping");
        let shards: ShardStats | undefined;
        let run;
        try {
          run = await runSweep(model, {
            out,
            restart: opts.restart,
            vectors: { matrix: vectors.matrix, tensor: vectors.tensor },
            ...(promptState ? { promptState } : {}),
            judgeSpec,
            openJudge: (dir) => openJudge(judgeSpec, dir, engine),
            onResume: (dir) => note(`resuming the sweep in ${dir}`),
            trait,
            layers,
            coefs: opts.coefs,
            positions: opts.positions,
            coherenceFloor: opts.coherenceFloor,
            questions,
            samplesPerQuestion: opts.samples,
            temperature: opts.temperature,
            maxTokens: opts.maxTokens,
            seed: opts.seed,
            chunkRequests: opts.chunk,
            runner,
            onShardStats: (s) => (shards = s),
            onProgress: (p) => bar.update(p),
          });
        } finally {
          bar.stop();
        }
        const { result } = run;
        const meta = {
          trait: trait.name,
          model: model.info.name,
          vectors: `${vectors.path}#${vectors.tensor}` + (promptState ? ` + ${promptState.ratio}×coef ${vectors.path}#${promptState.tensor} on the prompt` : ""),
          judge: run.judgeId,
          questions: questions.length,
          samplesPerQuestion: opts.samples,
          temperature: opts.temperature,
          maxTokens: opts.maxTokens,
          seed: opts.seed,
          createdAt: new Date().toISOString(),
        };
        const report = await writeSweepReport(out, result, meta);

        let updated: string | null = null;
        if (opts.update) {
          const stored = await storeBestLayer(vectors.path, result.bestLayer, model.info, trait.name);
          if (stored.stored === "none" && stored.why === "no-best-layer") {
            note(`no layer moved the score while keeping coherence ≥ ${opts.coherenceFloor}; best_layer in ${vectors.path} left unchanged`);
          } else if (stored.stored === "none") {
            note(`${vectors.path} is a reference .pt file and cannot hold metadata; import it (persona vectors import) to store best_layer`);
          } else if (stored.stored === "copy") {
            updated = stored.path;
            note(`stored best_layer ${result.bestLayer} in ${updated} (a copy of ${vectors.path}, which is not modified; it now stands for trait "${trait.name}")`);
          } else {
            updated = stored.path;
            note(`stored best_layer ${result.bestLayer} in ${vectors.path}`);
          }
        }

        if (opts.json) return printJson({ ...sweepJson(result, meta), run_dir: out, report, updated_vectors: updated, ...(runner && { shards }) });
        if (result.baseline) print(`baseline  ${trait.name} ${formatStats(result.baseline.traitScore)}, coherence ${formatStats(result.baseline.coherence)}`);
        print(
          table(
            ["layer", "coef", `${trait.name}`, "coherence"],
            result.grid.map((c) => [String(c.layer), String(c.coef), formatStats(c.traitScore), formatStats(c.coherence)]),
          ),
        );
        print(
          result.bestLayer === null
            ? `no layer moved the score while keeping coherence ≥ ${result.coherenceFloor}`
            : `best layer ${result.bestLayer} (coefficient ${result.bestCoef})`,
        );
        note(`report: ${report.html}`);
        if (runner && shards) noteShards(shards);
      }), { vocabOnly: opts.queue !== undefined });
    });
}
