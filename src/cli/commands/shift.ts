import { type Command, Option } from "commander";
import type { ModelInfo } from "../../engine/types.js";
import { PersonaError } from "../../errors.js";
import { JUDGE_SPEC_HELP } from "../../judge/resolve.js";
import { measureShift } from "../../pipeline/shift.js";
import { parseVectorRef, row, selectTensor } from "../../vectors/format.js";
import { loadVectorSource } from "../../vectors/steer.js";
import { intArg } from "../args/numbers.js";
import { withModel } from "../engine.js";
import { judgeSpecFor, loadTraitRef } from "../judge.js";
import { note, print, printJson, table } from "../output.js";
import { rolloutProgress } from "../progress.js";
import { withSamplingFlags } from "../args/sampling.js";

interface ShiftFlags {
  base: string;
  models?: string[];
  lora?: string[];
  trait: string;
  vectors?: string;
  layer?: number;
  judge?: string;
  out: string;
  restart?: boolean;
  samples: number;
  questions?: number;
  temperature: number;
  maxTokens: number;
  seed: number;
  json?: boolean;
  threads?: number;
  offline?: boolean;
}

/** `persona shift`: does the persona vector predict the trait each finetuned model gained? */
export function register(program: Command): void {
  withSamplingFlags(program
    .command("shift")
    .description("finetuning shift: each finetuned model's activation shift along the persona vector (vs the base) against its trait score, with Pearson r")
    .requiredOption("-b, --base <ref>", "the base model the others were finetuned from")
    .addOption(new Option("--models <files...>", "finetuned models (GGUF), one point each").conflicts("lora"))
    .option("--lora <adapters...>", "GGUF LoRA adapters finetuned from --base (persona finetune --lora-rank), one point each")
    .requiredOption("-t, --trait <trait>", "trait name, directory or file")
    .option("--vectors <file>", "persona vectors (FILE[#TENSOR]; default: the trait's vectors registered for the base model, the tensor persona monitor used)")
    .option("--layer <n>", "layer to project at (default: where persona monitor found the projection most predictive, else the vectors' best layer)", intArg(1))
    .option("-j, --judge <spec>", `judge: ${JUDGE_SPEC_HELP} (default: demo for the demo traits)`)
    .requiredOption("-o, --out <dir>", "run directory (resumes: finished models are not redone)")
    .option("--restart", "discard an existing run in --out that has another configuration")
    .option("-n, --samples <n>", "rollouts per question for the trait score", intArg(1), 10)
    .option("--questions <n>", "use only the first n evaluation questions", intArg(1))
    .option("--threads <n>", "CPU threads, at most the core count (default: PERSONA_THREADS, or the cores not busy with other work)", intArg(1))
    .option("--offline", "use only the local hub cache for hf: models")
    .option("--json", 'print JSON: {"trait", "layer", "models": [{"model", "shift", "trait_score", "coherence"}...], "pearson_r"}'),
  { unit: "rollout", maxTokens: 1000 })
    .addHelpText(
      "after",
      `
The shift of a model is the mean last-prompt-token activation over the trait's evaluation
questions (templated, no system prompt) minus the base model's, projected on the unit persona
vector; its trait score is \`persona eval\`'s, unsteered. By default it projects where
\`persona monitor\` found the last-prompt-token projection most predictive of the trait (the
monitor_layer it stores in the vectors file, with its tensor); the steering layer often is not
that layer. The run directory holds models.jsonl
(one record per finished model), shift.json and report.html (the scatter).

Examples:
  persona shift --base demo --models ft-normal.gguf ft-I.gguf ft-II.gguf --trait evil --out runs/shift-evil
  persona shift --base demo --lora normal.lora.gguf I.lora.gguf II.lora.gguf --trait evil --out runs/shift-evil-lora
  persona shift --base qwen.gguf --models a.gguf b.gguf --trait evil --vectors evil.safetensors --layer 20 --judge openai:gpt-4.1-mini --out runs/s --json
`,
    )
    .action(async function (this: Command, opts: ShiftFlags) {
      const models = opts.models ?? opts.lora;
      if (!models?.length) throw new PersonaError("E_BAD_INPUT", "give the finetuned models (--models F1 F2 ...) or adapters (--lora A1 A2 ...)");
      const loaded = await loadTraitRef(opts.trait);
      await withModel(
        this,
        {
          model: opts.base,
          ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
          ...(opts.offline ? { offline: true } : {}),
          judgeRef: { spec: judgeSpecFor(loaded, opts.judge), runDir: opts.out },
        },
        async (base, engine, judge) => {
          const { vector, layer } = await shiftVector(opts.vectors ?? loaded.trait.name, opts.layer, base.info);
          let bar = rolloutProgress("evaluating");
          const r = await measureShift({
            engine,
            base: base.info.path,
            models,
            lora: opts.lora !== undefined,
            trait: loaded.trait,
            vector,
            layer,
            judge,
            runDir: opts.out,
            restart: opts.restart ?? false,
            ...(opts.questions !== undefined ? { questions: loaded.trait.eval.questions.slice(0, opts.questions) } : {}),
            samplesPerQuestion: opts.samples,
            maxTokens: opts.maxTokens,
            temperature: opts.temperature,
            seed: opts.seed,
            onModel: (i, m) => {
              bar.stop();
              bar = rolloutProgress(`model ${i + 1}/${models.length}`);
              if (!opts.json) note(`model ${i + 1}/${models.length}: ${m}`);
            },
            onProgress: (p) => bar.update(p),
          }).finally(() => bar.stop());
          if (opts.json) return printJson(r);
          const fmt = (v: number | null) => (v === null ? "–" : v.toFixed(1));
          print(table(["model", "shift", `${r.trait} score`, "coherence"], r.models.map((m) => [m.model, m.shift.toFixed(3), fmt(m.trait_score), fmt(m.coherence)])));
          note(`layer ${r.layer}: Pearson r = ${r.pearson_r === null ? "n/a" : r.pearson_r.toFixed(3)}; report ${opts.out}/report.html`);
        },
        { vocabOnly: true },
      );
    });
}

/**
 * The vector row the shift projects on: by default the tensor and layer `persona monitor`
 * recorded as the most predictive of the trait from the last prompt token (the position the shift
 * measures), else the vectors' best (steering) layer, said so.
 */
async function shiftVector(source: string, layer: number | undefined, model: ModelInfo): Promise<{ vector: Float32Array; layer: number }> {
  const v = await loadVectorSource(source, model);
  const asked = parseVectorRef(source).tensor;
  const monitor = v.meta.monitorLayer && (asked === undefined || asked === v.meta.monitorLayer.tensor) ? v.meta.monitorLayer : undefined;
  const chosen = layer ?? monitor?.layer ?? v.meta.bestLayer;
  if (chosen === undefined) {
    throw new PersonaError("E_BAD_INPUT", `${v.path} records no monitor or best layer; give --layer, or record one with persona monitor --graded`);
  }
  if (chosen > model.nLayer) throw new PersonaError("E_SHAPE", `layer ${chosen} is out of range 0..${model.nLayer}`);
  if (layer === undefined && !monitor) note(`${v.path} records no monitor layer; projecting at its best (steering) layer ${chosen}. persona monitor --graded records the layer that predicts the trait`);
  const matrix = monitor && asked === undefined && monitor.tensor !== v.tensor ? selectTensor(v.file, monitor.tensor) : v.matrix;
  return { vector: Float32Array.from(row(matrix, chosen)), layer: chosen };
}
