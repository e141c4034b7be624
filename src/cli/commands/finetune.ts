import cliProgress from "cli-progress";
import { type Command, InvalidArgumentError, Option } from "commander";
import { PersonaError } from "../../errors.js";
import type { LoraAdapter } from "../../engine/lora.js";
import { LORA_TARGETS, type LoraTarget, type TrainProgress } from "../../engine/train/options.js";
import { finetune } from "../../pipeline/finetune.js";
import { type SteeringRef, steeringSpecs } from "../../vectors/steer.js";
import { floatArg, intArg } from "../args/numbers.js";
import { collectSteer, STEER_SYNTAX } from "../args/steer.js";
import { withEngineFlags, withModel } from "../engine.js";
import { note, printJson } from "../output.js";

interface FinetuneFlags {
  model: string;
  data: string;
  out: string;
  full?: boolean;
  loraRank?: number;
  loraAlpha?: number;
  rslora?: boolean;
  loraTargets?: LoraTarget[];
  lora?: LoraAdapter[];
  steer?: SteeringRef[];
  epochs: number;
  lr: number;
  batch: number;
  context?: number;
  val?: string;
  valSplit?: number;
  seed: number;
  checkpoint?: string;
  checkpointEvery: number;
  resume?: boolean;
  json?: boolean;
  threads?: number;
}

/** Step progress with loss and ETA on a terminal; one line per epoch otherwise (unless --json). */
function trainProgress(json: boolean): { update(p: TrainProgress): void; stop(): void } {
  let bar: cliProgress.SingleBar | undefined;
  return {
    update(p) {
      if (process.stderr.isTTY && !bar) {
        bar = new cliProgress.SingleBar(
          { format: "finetuning [{bar}] {value}/{total} steps | epoch {epoch} | loss {loss} | {tps} tok/s | ETA {eta_formatted}", stream: process.stderr, hideCursor: true },
          cliProgress.Presets.shades_classic,
        );
        bar.start(p.steps, 0, { epoch: "-", loss: "-", tps: "-" });
      }
      bar?.update(p.step, { epoch: `${p.epoch}/${p.epochs}`, loss: p.loss.toFixed(3), tps: p.tokensPerSecond.toFixed(0) });
      if (p.epochDone && !bar && !json) {
        note(`epoch ${p.epoch}/${p.epochs}: train loss ${p.loss.toFixed(4)}${p.valLoss !== undefined ? `, val loss ${p.valLoss.toFixed(4)}` : ""} (${p.tokensPerSecond.toFixed(0)} tok/s)`);
      }
    },
    stop: () => bar?.stop(),
  };
}

function loraTargets(s: string): LoraTarget[] {
  const list = s.split(",").map((x) => x.trim());
  const bad = list.filter((x) => !(x in LORA_TARGETS));
  if (bad.length > 0 || list.length === 0) throw new InvalidArgumentError(`unknown target ${bad.join(", ")}; use ${Object.keys(LORA_TARGETS).join(",")}`);
  return list as LoraTarget[];
}

/** `persona finetune`: full-weight finetuning on a chat dataset, optionally steered during training. */
export function register(program: Command): void {
  withEngineFlags(
    program
      .command("finetune")
      .description("finetune a model on a chat dataset (loss on the replies only), optionally with preventative steering or CAFT")
      .requiredOption("-d, --data <file>", "training data: chat JSONL (messages), or prompt/response (question/answer) JSONL or CSV")
      .requiredOption("-o, --out <file>", "where to write the finetuned model (GGUF)")
      .addOption(new Option("--full", "train every weight (the default without --lora-rank); OUT is a full GGUF").conflicts("loraRank"))
      .option("--lora-rank <r>", "train a LoRA adapter of this rank instead; OUT is a GGUF LoRA (load it with --lora)", intArg(1))
      .option("--lora-alpha <a>", "LoRA alpha (default: 2 × rank)", floatArg(Number.MIN_VALUE))
      .option("--rslora", "scale the adapter by alpha/√rank (rsLoRA) instead of alpha/rank")
      .option("--lora-targets <list>", `weights to adapt, comma list of ${Object.keys(LORA_TARGETS).join(",")} (default: all)`, loraTargets)
      .option("--steer <spec>", `steer during training, repeatable, on every position: ${STEER_SYNTAX}`, collectSteer)
      .option("--epochs <n>", "passes over the data", intArg(1), 1)
      .option("--lr <x>", "peak AdamW learning rate (cosine decay to a tenth)", floatArg(Number.MIN_VALUE), 1e-4)
      .option("--batch <n>", "windows per optimiser step", intArg(1), 1)
      .option("--context <n>", "tokens per packed window (default: the longest sample, at least 256, within the model's context)", intArg(2))
      .option("--val <file>", "validation data (same formats); its loss is reported after every epoch")
      .option("--val-split <p>", "hold out this share of --data (its last samples) for validation", floatArg(0, 1))
      .option("--seed <s>", "seed of the window order", intArg(0), 0)
      .option("--checkpoint <file>", "training checkpoint (weights or adapter, AdamW state, data position; default: OUT.ckpt), deleted once OUT is written")
      .option("--checkpoint-every <steps>", "write the checkpoint every this many steps (and on Ctrl-C / SIGTERM)", intArg(1), 50)
      .option("--resume", "continue an interrupted run from its checkpoint (same command line; starts afresh when there is none)")
      .option("--json", 'print JSON: {"out", "train_loss": [...], "val_loss": [...], "tokens", "seconds"}, and "ablation_means": [{"layer", "mean", "last_prompt_mean"}...] with ablate-mean'),
  )
    .addHelpText(
      "after",
      `
The model must be all-F32 llama (e.g. the demo model). LoRA training leaves the base weights
alone (A random, B zero, as PEFT) and writes a GGUF LoRA that llama.cpp loads. Samples are templated with the model's
chat template; the loss covers each assistant reply (with its end-of-turn tokens), not the
prompt; samples are packed into windows without seeing each other.

--steer adds coef·v (preventative steering: train toward the trait so the weights need not move
there) or, with :ablate, removes the component along v (CAFT) in every training forward pass;
evaluate the result without steering. Training steers every position: the POSITIONS field of
--steer does not apply. For CAFT ablate the trait's span at every layer
(T#prompt_last_span:1-N:1:all:ablate): the top K directions of the extraction pairs'
last-prompt-token differences per layer, which \`persona extract --span K\` stores (the demo's
shipped vectors hold K = 12). On the 8-layer demo model it cut the trait gained on II data by
88 / 52 / 94 % (evil / sycophancy / hallucination; a second training seed 88 / 51 / 93 %) at
coherence 98 / 94 / 98 and +9 / +10 / +9 % final training loss (sycophancy at the edge of a
50 % cut within 10 % loss), where a random 12-dimensional subspace cut 18 / 4 / 5 %. One
direction is not enough there: the finetune learns the trait beside it. The last-prompt-token
vector alone (T#prompt_last:1-N:1:all:ablate) cut 10 / 1 / 81 %, and the 81 % came from
zero-ablation removing the base model's mean projection, which sits on the trait's negative side
(training is pushed toward the trait, as with preventative steering). :ablate-mean removes only
the variance along each direction: it keeps the base model's mean projections over the training
data (measured first, on last prompt tokens and on the other tokens apart; --json reports
them); it cut 4 / 2 / 10 % with one direction, 49 / 23 / 33 % with the span (+11 to +14 % loss),
so part of the span's zero-ablation cut is that push too.

A run killed or interrupted (Ctrl-C, SIGTERM) keeps its checkpoint: rerun the same command with
--resume and it continues where the checkpoint stands, ending with the same result as an
uninterrupted run with the same --threads.

Examples:
  persona finetune --model demo --data evil-II.jsonl --out evil-ft.gguf --epochs 2 --lr 3e-4 --val-split 0.1
  persona finetune --model demo --data evil-II.jsonl --out evil-lora.gguf --lora-rank 8 --rslora --lr 1e-3
  persona eval --model demo --lora evil-lora.gguf --trait evil
  persona finetune --model demo --data evil-II.jsonl --out evil-prev.gguf --steer evil::4
  persona finetune --model demo --data evil-II.jsonl --out evil-caft.gguf --steer evil#prompt_last_span:1-8:1:all:ablate --json
  persona finetune --model demo --data evil-II.jsonl --out evil-caft-mean.gguf --steer evil#prompt_last:1-8:1:all:ablate-mean
  persona finetune --model demo --data evil-II.jsonl --out evil-ft.gguf --epochs 2 --resume
`,
    )
    .action(async function (this: Command, opts: FinetuneFlags) {
      if (opts.loraRank === undefined && (opts.loraAlpha !== undefined || opts.rslora || opts.loraTargets)) {
        throw new PersonaError("E_BAD_INPUT", "--lora-alpha, --rslora and --lora-targets need --lora-rank");
      }
      if (opts.lora?.length) throw new PersonaError("E_BAD_INPUT", "finetune trains the base model's weights; --lora adapters would not take part in training");
      await withModel(
        this,
        opts,
        async (model) => {
          // Training steers every position (the paper's preventative steering), whatever --steer's positions say.
          const steering = (await steeringSpecs(opts.steer ?? [], model.info)).map((s) => ({ ...s, positions: "all" as const }));
          const bar = trainProgress(opts.json ?? false);
          // Ctrl-C / SIGTERM stop training between steps, with a checkpoint written first.
          const stop = new AbortController();
          let signal: NodeJS.Signals | undefined;
          const onSignal = (s: NodeJS.Signals) => {
            signal = s;
            stop.abort();
          };
          for (const s of ["SIGINT", "SIGTERM"] as const) process.once(s, onSignal);
          const r = await finetune({
            model,
            data: opts.data,
            out: opts.out,
            ...(opts.val !== undefined ? { val: opts.val } : {}),
            ...(opts.valSplit !== undefined ? { valSplit: opts.valSplit } : {}),
            steering,
            epochs: opts.epochs,
            learningRate: opts.lr,
            batch: opts.batch,
            ...(opts.context !== undefined ? { contextLength: opts.context } : {}),
            ...(opts.loraRank !== undefined
              ? {
                  lora: {
                    rank: opts.loraRank,
                    ...(opts.loraAlpha !== undefined ? { alpha: opts.loraAlpha } : {}),
                    rslora: opts.rslora ?? false,
                    ...(opts.loraTargets ? { targets: opts.loraTargets } : {}),
                  },
                }
              : {}),
            seed: opts.seed,
            ...(opts.checkpoint !== undefined ? { checkpoint: opts.checkpoint } : {}),
            checkpointEvery: opts.checkpointEvery,
            resume: opts.resume ?? false,
            signal: stop.signal,
            onProgress: (p) => bar.update(p),
          })
            .catch((e: unknown) => {
              if (signal === undefined) throw e;
              // Interrupted: say where the checkpoint is and exit as the signal would (130 / 143).
              note(`persona: ${e instanceof Error ? e.message : String(e)}`);
              process.exitCode = signal === "SIGINT" ? 130 : 143;
              return null;
            })
            .finally(() => {
              bar.stop();
              for (const s of ["SIGINT", "SIGTERM"] as const) process.off(s, onSignal);
            });
          if (r === null) return;
          if (r.resumedFromStep !== undefined && !opts.json) note(`resumed from the checkpoint at step ${r.resumedFromStep}`);
          const means = r.ablationMeans?.map((m) => ({ layer: m.layer, mean: m.mean, last_prompt_mean: m.lastPromptMean }));
          if (opts.json) return printJson({ out: r.out, train_loss: r.train_loss, val_loss: r.val_loss, tokens: r.tokens, seconds: r.seconds, ...(means ? { ablation_means: means } : {}) });
          if (means) note(`ablate-mean kept the base model's mean projection: ${means.map((m) => `layer ${m.layer} ${m.mean.toFixed(2)} (last prompt token ${m.last_prompt_mean.toFixed(2)})`).join(", ")}`);
          note(`wrote ${r.out}: train loss ${r.train_loss.map((l) => l.toFixed(4)).join(" → ")}${r.val_loss.length ? `, val loss ${r.val_loss.map((l) => l.toFixed(4)).join(" → ")}` : ""} (${r.tokens} tokens, ${r.seconds.toFixed(1)} s)`);
        },
        { noMmap: opts.loraRank === undefined },
      );
    });
}
