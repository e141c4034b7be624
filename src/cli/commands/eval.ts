import { mkdir } from "node:fs/promises";
import path from "node:path";
import { type Command, Option } from "commander";
import { PersonaError } from "../../errors.js";
import { type EvaluateTraitOptions, evaluateTrait, evaluateTraitRun } from "../../pipeline/evaluate.js";
import { statsJson } from "../../report/sweep.js";
import { writeFileAtomic } from "../../store/atomic.js";
import { systemPrompt, type TraitDefinition } from "../../traits/format.js";
import { type SteeringRef, steeringSpecs } from "../../vectors/steer.js";
import { intArg } from "../args/numbers.js";
import { collectSteer, formatSteeringRef, STEER_SYNTAX } from "../args/steer.js";
import { withEngineFlags, withModel } from "../engine.js";
import { JUDGE_SPEC_HELP } from "../../judge/resolve.js";
import type { TraitSplitName } from "../../traits/registry.js";
import { splitOption } from "../args/trait.js";
import { judgeSpecFor, loadTraitRef } from "../judge.js";
import { formatStats, note, print, printJson } from "../output.js";
import { rolloutProgress } from "../progress.js";
import { withSamplingFlags } from "../args/sampling.js";
import { noteShards, refuseUntravelled, withQueue, withQueueFlag } from "../args/queue.js";
import type { LoraAdapter } from "../../engine/lora.js";
import type { ShardStats } from "../../queue/runner.js";

/** `--system-pos N` / `--system-neg N`: the trait's N-th (1-based) evaluation instruction as a system prompt. */
export function instructionSystemPrompt(trait: TraitDefinition, n: number, polarity: "pos" | "neg"): string {
  const pairs = trait.eval.instruction;
  const pair = pairs[n - 1];
  if (!pair) throw new PersonaError("E_BAD_INPUT", `--system-${polarity} ${n}: trait ${trait.name} has instructions 1..${pairs.length}`);
  return systemPrompt(trait.name, trait.antonym, pair[polarity], polarity);
}

interface EvalFlags {
  model: string;
  trait: string;
  split?: TraitSplitName;
  judge?: string;
  steer?: SteeringRef[];
  system?: string;
  systemPos?: number;
  systemNeg?: number;
  samples: number;
  questions?: number;
  temperature: number;
  maxTokens: number;
  seed: number;
  out?: string;
  restart?: boolean;
  json?: boolean;
  threads?: number;
  chunk?: number;
  queue?: string;
  lora?: LoraAdapter[];
}

/** `persona eval`: the trait expression score of a model, optionally steered or under a system prompt. */
export function register(program: Command): void {
  withEngineFlags(
    withSamplingFlags(withQueueFlag(program
      .command("eval"))
      .description("score how strongly a model (optionally steered) expresses a trait on the trait's evaluation questions")
      .requiredOption("-t, --trait <trait>", "trait name, directory or file")
      .addOption(splitOption())
      .option("-j, --judge <spec>", `judge: ${JUDGE_SPEC_HELP} (default: demo for the demo traits)`)
      .option("--steer <spec>", `steer while generating, repeatable: ${STEER_SYNTAX}`, collectSteer)
      .addOption(new Option("-s, --system <text>", "system prompt").conflicts(["systemPos", "systemNeg"]))
      .addOption(new Option("--system-pos <n>", "use the trait's n-th pos instruction (1-based) as the system prompt").argParser(intArg(1)).conflicts("systemNeg"))
      .addOption(new Option("--system-neg <n>", "use the trait's n-th neg instruction (1-based) as the system prompt").argParser(intArg(1)))
      .option("-n, --samples <n>", "rollouts per question", intArg(1), 10)
      .option("--questions <n>", "use only the first n evaluation questions", intArg(1))
      .option("-o, --out <dir>", "run directory: eval.json (every rollout and its scores), finished shards and a judge cache; a re-run with the same settings resumes it")
      .option("--restart", "set aside a run in --out that used other settings instead of refusing")
      .option("--chunk <n>", "most rollouts per batched generate call, and per shard with --queue (default: all in one)", intArg(1))
      .option("--json", "print JSON: trait_score and coherence {mean, std, n, nulls}, steering, samples"), { unit: "rollout", maxTokens: 1000 }),
  )
    .addHelpText(
      "after",
      `
Scores are the judge's 0–100 trait and coherence scores, averaged over questions × rollouts;
null scores (refusals, unscorable replies) are left out and counted.

Examples:
  persona eval --model demo --trait evil
  persona eval --model demo --trait evil --steer evil::3:response --samples 5 --json
  persona eval --model demo --trait evil --system-pos 1 --steer evil::-3:response   # −coef under a pos prompt
  persona eval --model demo --trait sycophantic --system-pos 1 --steer sycophantic:5:-1.5 \\
    --steer 'sycophantic#prompt_last:5:-0.75:prompt'   # also steer the prompt's persona state
  persona eval --model qwen.gguf --trait traits/evil --judge openai:gpt-4.1-mini --out runs/eval-evil
  persona eval --model qwen.gguf --trait traits/evil --judge openai:gpt-4.1-mini --samples 50 --chunk 100 \
    --queue redis://10.0.0.5:6379 --out runs/eval-evil      # shards of 100 rollouts on persona workers

With --out, each finished shard (--chunk rollouts) is kept in DIR/samples.jsonl: a killed eval
re-run with the same command redoes only the shards it had not finished, and writes the same
eval.json; other settings on the same DIR are refused unless --restart is given.

A trait name as --steer SOURCE uses the vectors registered for the model and, with LAYER left
empty, the best layer \`persona sweep\` stored; the sweep steers response positions, as the reference.
`,
    )
    .action(async function (this: Command, opts: EvalFlags) {
      const loaded = await loadTraitRef(opts.trait, opts.split);
      const { trait } = loaded;
      const system =
        opts.systemPos !== undefined
          ? instructionSystemPrompt(trait, opts.systemPos, "pos")
          : opts.systemNeg !== undefined
            ? instructionSystemPrompt(trait, opts.systemNeg, "neg")
            : opts.system;
      const questions = trait.eval.questions.slice(0, opts.questions);
      const judgeSpec = judgeSpecFor(loaded, opts.judge);
      refuseUntravelled(opts, judgeSpec);
      if (opts.out) await mkdir(opts.out, { recursive: true });
      // With --queue this process only plans and merges: the vocabulary and shapes are all it needs.
      await withModel(this, { ...opts, judgeRef: { spec: judgeSpec, runDir: opts.out } }, async (model, _engine, judge) => withQueue(opts.queue, async (runner) => {
        const refs = opts.steer ?? [];
        const specs = await steeringSpecs(refs, model.info);
        const steering = model.steering(specs);
        const bar = rolloutProgress("evaluating");
        let shards: ShardStats | undefined;
        const evaluate: EvaluateTraitOptions = {
          trait,
          judge,
          steering,
          system,
          questions,
          samplesPerQuestion: opts.samples,
          temperature: opts.temperature,
          maxTokens: opts.maxTokens,
          seed: opts.seed,
          runner,
          judgeSpec,
          shardRequests: opts.chunk,
          onShardStats: (s) => (shards = s),
          onProgress: (p) => bar.update(p),
        };
        const result = await (opts.out
          ? evaluateTraitRun(model, { ...evaluate, out: opts.out, restart: opts.restart, onResume: (dir) => note(`resuming the evaluation in ${dir}`) }).then((r) => r.evaluation)
          : evaluateTrait(model, evaluate)
        ).finally(() => bar.stop());
        const summary = {
          trait: trait.name,
          model: model.info.name,
          judge: judge.id,
          trait_score: statsJson(result.traitScore),
          coherence: statsJson(result.coherence),
          steering: refs.map((r, i) => ({ source: r.source, layer: specs[i]!.layer, coef: r.coef, positions: r.positions, mode: r.mode, ...(r.bound ? { bound: r.bound } : {}) })),
          system: system ?? null,
          samples: result.samples.length,
          questions: questions.length,
          samples_per_question: opts.samples,
          temperature: opts.temperature,
          max_tokens: opts.maxTokens,
          seed: opts.seed,
        };
        if (opts.out) {
          const file = path.join(opts.out, "eval.json");
          await writeFileAtomic(file, `${JSON.stringify({ ...summary, rollouts: result.samples }, null, 2)}\n`);
          if (!opts.json) note(`wrote ${file}`);
        }
        if (opts.json) return printJson({ ...summary, ...(runner && { shards }) });
        const steered = summary.steering.map(formatSteeringRef);
        const label = `${trait.name} score`;
        const width = Math.max(label.length, "coherence".length) + 2;
        print(`${label.padEnd(width)}${formatStats(result.traitScore)}\n${"coherence".padEnd(width)}${formatStats(result.coherence)}`);
        note(`${result.samples.length} rollouts (${questions.length} questions × ${opts.samples}), judge ${judge.id}${steered.length ? `, steering ${steered.join(" + ")}` : ""}${system ? `, system prompt "${system}"` : ""}`);
        if (runner && shards) noteShards(shards);
      }), { vocabOnly: opts.queue !== undefined });
    });
}
