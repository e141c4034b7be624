import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Command } from "commander";
import { PersonaError } from "../../errors.js";
import { extractPersonaVectors, type ExtractResult, type ExtractStage, timingsJson } from "../../pipeline/extract.js";
import { registerVectors } from "../../vectors/registry.js";
import { floatArg, intArg } from "../args/numbers.js";
import { withEngineFlags, withModel } from "../engine.js";
import type { TraitSplitName } from "../../traits/registry.js";
import { splitOption } from "../args/trait.js";
import { judgeSpecFor, loadTraitRef } from "../judge.js";
import { JUDGE_SPEC_HELP } from "../../judge/resolve.js";
import { note, print, printJson, table } from "../output.js";
import { progress, type Progress } from "../progress.js";
import { noteShards, refuseUntravelled, withQueue, withQueueFlag } from "../args/queue.js";
import type { LoraAdapter } from "../../engine/lora.js";
import type { ShardStats } from "../../queue/runner.js";

interface ExtractFlags {
  model: string;
  trait: string;
  split?: TraitSplitName;
  judge?: string;
  rollouts: number;
  maxTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  traitThreshold: number;
  coherenceThreshold: number;
  parallel?: number;
  judgeConcurrency: number;
  restart?: boolean;
  register?: boolean;
  out: string;
  json?: boolean;
  threads?: number;
  chunk?: number;
  queue?: string;
  lora?: LoraAdapter[];
  span?: number;
}

const STAGE_LABELS: Record<ExtractStage, string> = { rollouts: "rollouts", judging: "judging ", capture: "capture " };
const STAGES: readonly ExtractStage[] = ["rollouts", "judging", "capture"];

/**
 * One bar at a time for overlapping stages: the earliest unfinished stage is shown; a later
 * stage's bar opens on what is left of it when the earlier one completes.
 */
function stageBars(): { update(stage: ExtractStage, done: number, total: number): void; stop(): void } {
  const seen = new Map<ExtractStage, { done: number; total: number }>();
  let shown: { stage: ExtractStage; bar: Progress; done: number } | undefined;
  const front = () => STAGES.find((s) => {
    const p = seen.get(s);
    return !p || p.done < p.total;
  });
  return {
    update(stage, done, total) {
      seen.set(stage, { done, total });
      const f = front();
      if (shown && shown.stage !== f) {
        const p = seen.get(shown.stage)!;
        shown.bar.tick(p.done - shown.done);
        shown.bar.stop();
        shown = undefined;
      }
      const p = f && seen.get(f);
      if (!f || !p) return;
      if (!shown) shown = { stage: f, bar: progress(STAGE_LABELS[f], p.total - p.done), done: p.done };
      shown.bar.tick(p.done - shown.done);
      shown.done = p.done;
    },
    stop() {
      shown?.bar.stop();
      shown = undefined;
    },
  };
}

const fmt = (x: number | null) => (x === null ? "-" : x.toFixed(1));

function report(r: ExtractResult, registered: string | undefined): string {
  const c = r.counts;
  const why = [
    c.nullScore && `${c.nullScore} null score`,
    c.posTraitLow && `${c.posTraitLow} pos below threshold`,
    c.negTraitHigh && `${c.negTraitHigh} neg above threshold`,
    c.incoherent && `${c.incoherent} incoherent`,
    c.emptyResponse && `${c.emptyResponse} empty reply`,
  ].filter(Boolean);
  const lines = [
    `kept ${c.kept} of ${c.total} pos/neg pairs${c.dropped ? ` (dropped ${c.dropped}: ${why.join(", ")})` : ""}`,
    "",
    table(
      ["", "trait", "coherence", "rollouts"],
      (["pos", "neg"] as const).map((p) => [p, fmt(r.scores[p].trait), fmt(r.scores[p].coherence), String(r.scores[p].rollouts)]),
    ),
    "",
    `vectors: ${r.vectorsPath}`,
  ];
  if (r.timings.newRollouts > 0) {
    lines.push(`generated ${r.timings.newRollouts} rollouts in ${r.timings.rolloutsSeconds.toFixed(1)} s (${(r.timings.newRollouts / r.timings.rolloutsSeconds).toFixed(1)}/s)`);
  }
  if (registered) {
    lines.push(`registered: ${registered} (use --steer ${path.basename(registered, ".safetensors")}:LAYER:COEF; \`persona sweep\` stores a best layer)`);
  }
  return lines.join("\n");
}

/** `persona extract`: rollouts, judging, filtering and capture into a vectors file (spec §2). */
export function register(program: Command): void {
  withEngineFlags(
    withQueueFlag(program
      .command("extract"))
      .description("extract persona vectors for a trait: pos/neg rollouts, judge, filter, mean activation difference")
      .requiredOption("--trait <ref>", "trait name, trait directory or trait file (see `persona trait list`)")
      .addOption(splitOption())
      .requiredOption("-o, --out <dir>", "run directory (resumed when it holds the same run)")
      .option("--judge <spec>", `judge: ${JUDGE_SPEC_HELP} (default: demo for the built-in demo traits)`)
      .option("--rollouts <n>", "rollouts per pair × question per polarity", intArg(1), 10)
      .option("--max-tokens <n>", "most new tokens per rollout", intArg(1), 1000)
      .option("--temperature <t>", "sampling temperature", floatArg(0), 1)
      .option("--top-p <p>", "nucleus sampling", floatArg(0, 1), 1)
      .option("--seed <s>", "base seed (each rollout derives its own)", intArg(0), 0)
      .option("--trait-threshold <x>", "keep a pair when pos trait ≥ x and neg trait < x", floatArg(), 50)
      .option("--coherence-threshold <x>", "and both coherences ≥ x", floatArg(), 50)
      .option("--parallel <n>", "sequences generated together (does not change results)", intArg(1))
      .option("--judge-concurrency <n>", "judge calls in flight at once", intArg(1), 8)
      .option("--chunk <n>", "rollouts per batched generate call, and per shard with --queue (does not change results)", intArg(1), 256)
      .option("--span <k>", "also store prompt_last_span: per layer the top K directions of the kept pairs' last-prompt-token differences, the trait subspace CAFT ablates (--steer FILE#prompt_last_span:1-N:1:all:ablate); a finished run only redoes its capture", intArg(1))
      .option("--restart", "set aside a run directory with another configuration and start over (judge scores are kept)")
      .option("--register", "also register the vectors for the model in your data directory (see `persona vectors list`), so `--steer TRAIT:LAYER:COEF` finds them")
      .option("--json", "print {vectors, run_dir, counts, scores, timings, ...} as JSON"),
  )
    .addHelpText(
      "after",
      `
The run directory holds run.json, rollouts.jsonl, judgements.jsonl, judge-cache.jsonl, and at the
end vectors.safetensors and summary.json. Re-running the same command resumes an interrupted run
without redoing any stored rollout or judgement; a different configuration is refused unless
--restart is given.

Examples:
  persona extract --model demo --trait evil --out runs/evil
  persona extract --model demo --trait evil --rollouts 4 --max-tokens 200 --out runs/evil --register
  persona extract --model qwen2.5-7b-instruct-q4_k_m.gguf --trait traits/humorous \\
      --judge openai:gpt-4.1-mini --parallel 32 --out runs/humorous --json
  persona extract --model m.gguf --trait evil --judge http://localhost:8000/v1#qwen2.5-7b \\
      --trait-threshold 40 --restart --out runs/evil
  persona extract --model qwen.gguf --trait traits/humorous --judge openai:gpt-4.1-mini --chunk 64 \
      --queue redis://10.0.0.5:6379 --out runs/humorous    # rollouts and judging on persona workers
  persona extract --model demo --trait evil --rollouts 2 --max-tokens 64 --out runs/evil --span 12
  persona finetune --model demo --data evil-II.jsonl --out evil-caft.gguf \
      --steer runs/evil/vectors.safetensors#prompt_last_span:1-8:1:all:ablate

--span K keeps every kept pair's last-prompt-token difference in memory (pairs × (n_layer+1) ×
n_embd floats: 416 MB for 1,000 pairs of a 28-layer, 3,584-wide model) and runs here, so it does
not combine with --queue. On the demo model K = 12 (of 128 dimensions) made CAFT cut the trait a
finetune gains on II data by 88 / 52 / 94 % (evil / sycophantic / hallucinating) at +9 / +10 / +9 %
training loss (see persona finetune --help). K is at most 256, n_embd and the kept pairs (checked
before the capture); a finished run keeps its vectors and metadata and only gains the span.

With --queue the rollouts are generated and judged on \`persona worker\` processes in shards of
--chunk (workers need the judge too: the same --judge spec, with its API key in their
environment), and so are the forward passes of the kept pairs (shards of at most 64, whose
float64 sums are merged in order); this process only stores results in the run directory (it
loads the vocabulary only). The vectors are the same bytes as a local run's.
`,
    )
    .action(async function (this: Command, opts: ExtractFlags) {
      const loaded = await loadTraitRef(opts.trait, opts.split);
      const { trait } = loaded;
      const judgeSpec = judgeSpecFor(loaded, opts.judge);
      refuseUntravelled(opts, judgeSpec);
      if (opts.queue !== undefined && opts.span !== undefined) throw new PersonaError("E_BAD_INPUT", "--span needs every kept pair's activations here and does not combine with --queue; run it without --queue on the same --out (only the capture is redone)");
      // No run directory for the judge here: the pipeline keeps its own judge cache in the run.
      await withModel(this, { ...opts, judgeRef: { spec: judgeSpec } }, async (model, _engine, judge) => withQueue(opts.queue, async (runner) => {
        const bars = stageBars();
        let shards: ShardStats | undefined;
        let result: ExtractResult;
        try {
          result = await extractPersonaVectors(model, {
            trait,
            judge,
            runDir: opts.out,
            rollouts: opts.rollouts,
            temperature: opts.temperature,
            topP: opts.topP,
            maxTokens: opts.maxTokens,
            seed: opts.seed,
            traitThreshold: opts.traitThreshold,
            coherenceThreshold: opts.coherenceThreshold,
            parallel: opts.parallel,
            judgeConcurrency: opts.judgeConcurrency,
            restart: opts.restart,
            ...(opts.span !== undefined && { span: opts.span }),
            runner,
            judgeSpec,
            shardRollouts: opts.chunk,
            // Rollouts, then capture.
            onShardStats: (s) => (shards = shards ? { shards: shards.shards + s.shards, reused: shards.reused + s.reused, retried: shards.retried + s.retried } : s),
            onProgress: (stage, done, total) => bars.update(stage, done, total),
            onResume: (found) =>
              note(
                found.complete
                  ? `${opts.out} already holds this finished run: nothing to redo, its result follows`
                  : `resuming the extract run in ${opts.out}: ${found.rollouts} of ${found.total} rollouts and ${found.judgements} judgements already stored`,
              ),
          });
        } finally {
          bars.stop();
        }
        let registered: string | undefined;
        if (opts.register) registered = await registerVectors(model.info.path, trait.name, await readFile(result.vectorsPath));
        if (opts.json) {
          // summary.json's fields (snake_case counts, scores), with paths as given by --out and
          // this invocation's timings (summary.json keeps those of the run that finished it).
          const summary = JSON.parse(await readFile(result.summaryPath, "utf8")) as Record<string, unknown>;
          return printJson({
            ...summary,
            timings: timingsJson(result.timings),
            vectors: result.vectorsPath,
            summary: result.summaryPath,
            run_dir: result.runDir,
            resumed: result.resumed,
            ...(registered && { registered }),
            ...(runner && shards && { shards }),
          });
        }
        print(report(result, registered));
        if (runner && shards) noteShards(shards);
      }), { vocabOnly: opts.queue !== undefined });
    });
}
