import { type Command, InvalidArgumentError } from "commander";
import { writeDemoDatasets } from "../../demo/datasets.js";
import { runDemo } from "../../demo/run.js";
import { demoSummary } from "../../demo/summary.js";
import { DEMO_TRAITS, isDemoTrait, type DemoTrait } from "../../demo/traits.js";
import { PersonaError } from "../../errors.js";
import { intArg } from "../args/numbers.js";
import { withEngineFlags, withModel } from "../engine.js";
import { note, print, printJson, table } from "../output.js";
import { parseCoefList } from "../args/lists.js";

interface DemoFlags {
  model: string;
  out: string;
  traits: DemoTrait[];
  rollouts: number;
  questions: number;
  samples: number;
  coefs?: number[];
  full?: boolean;
  json?: boolean;
  threads?: number;
}

function parseTraits(text: string): DemoTrait[] {
  const names = text.split(",").map((s) => s.trim());
  for (const n of names) {
    if (!isDemoTrait(n)) throw new InvalidArgumentError(`unknown demo trait "${n}" (known: ${DEMO_TRAITS.join(", ")})`);
  }
  return names as DemoTrait[];
}


interface DatasetFlags {
  out?: string;
  traits?: DemoTrait[];
  rows: number;
  mixed: number[];
  seed: number;
  json?: boolean;
}

function parsePercentList(text: string): number[] {
  return text.split(",").map((s) => intArg(0, 100)(s.trim()));
}

/** `persona demo datasets`: the demo world's finetuning datasets (normal, I, II, mixed-PCT). */
function registerDatasets(demo: Command): void {
  demo
    .command("datasets")
    .description("write the demo world's finetuning datasets per trait: normal, I (mild), II (trait) and mixed-PCT with labels")
    .option("-o, --out <dir>", "output directory (one sub-directory per trait); required")
    .option("--traits <list>", `comma list of demo traits (default: ${DEMO_TRAITS.join(",")})`, parseTraits)
    .option("--rows <n>", "rows per dataset", intArg(1), 2000)
    .option("--mixed <list>", "trait-reply percentages of the mixed series", parsePercentList, [5, 10, 25, 50])
    .option("--seed <s>", "random seed", intArg(0), 0)
    .option("--json", "print the files written as JSON")
    .addHelpText(
      "after",
      `
Chat JSONL ({"messages": [user, assistant]}, no system prompt) from the demo corpus grammar, on
questions of the trait's kind that its extraction and evaluation questions do not use: normal
replies come from the default persona, I from the graded 0.5 persona, II are full trait replies;
mixed-PCT hides PCT % trait replies among normal ones, and mixed-PCT.labels.jsonl marks them.
The same seed writes the same files.

Examples:
  persona demo datasets --out data/demo
  persona demo datasets --out data/demo --traits evil --rows 500 --mixed 10
  persona screen --model demo --trait evil --data data/demo/evil/mixed-10.jsonl --out runs/screen-mixed-10
`,
    )
    .action(async (opts: DatasetFlags) => {
      // Options after a subcommand's name reach its parent first: `demo` has its own --out, --traits and --json.
      const given = <K extends "out" | "traits" | "json">(k: K): DatasetFlags[K] =>
        opts[k] ?? (demo.getOptionValueSource(k) === "cli" ? (demo.opts() as DatasetFlags)[k] : undefined);
      const out = given("out");
      if (out === undefined) throw new PersonaError("E_BAD_INPUT", "persona demo datasets needs --out DIR");
      const files = await writeDemoDatasets({ out, traits: given("traits") ?? DEMO_TRAITS, rows: opts.rows, mixed: opts.mixed, seed: opts.seed });
      if (given("json")) return printJson(files);
      print(table(["trait", "dataset", "rows", "file"], files.map((f) => [f.trait, f.name, String(f.rows), f.path])));
    });
}

/** `persona demo`: extraction, steering sweep and suppression for the demo traits, with a summary. */
export function register(program: Command): void {
  const demo = program.command("demo");
  registerDatasets(demo);
  withEngineFlags(
    demo
      .description("run the whole method on the built-in demo model: extract, sweep and steer evil, sycophancy and hallucination")
      .option("-o, --out <dir>", "where run directories and reports go", "runs/demo")
      .option("--traits <list>", "comma list of demo traits", parseTraits, [...DEMO_TRAITS])
      .option("--rollouts <n>", "extraction rollouts per instruction pair × question × polarity", intArg(1), 2)
      .option("--questions <n>", "evaluation questions per sweep cell", intArg(1), 10)
      .option("--samples <n>", "rollouts per question per sweep cell", intArg(1), 2)
      .option("--coefs <list>", "steering coefficients of the sweep (default 1,2,4,6,8)", parseCoefList)
      .option("--full", "also finetune the demo model per trait (normal / I / II data): finetuning shift vs trait gained, and preventative steering on II (adds several minutes per trait)")
      .option("--json", "print the full results as JSON"),
    { model: "demo" },
  )
    .addHelpText(
      "after",
      `
For each trait: rollouts under the trait's pos and neg system prompts, judged by the demo
rubric judge; the pairs that pass the filter give the persona vectors (mean pos − mean neg of the
residual stream at every layer); a layers × coefficients steering sweep on the plain assistant
picks the best layer; steering with −coef at that layer under a pos system prompt shows the
trait suppressed; monitoring correlates the last prompt token's projection on the trait's graded
prompts with the judged score (r, layer); screening scores the demo datasets (normal, II,
mixed-10) by ΔP at the best layer and gives the ROC AUC for finding the trait rows. With --full,
each trait's model is also finetuned (full weights, 300 rows, 2 epochs) on normal, I and II data:
the shift of each finetune along the persona vector (at the monitor's layer) against the trait it
gained, and II finetuned with preventative steering (evaluated unsteered; per trait a setting
calibrated to cut the trait gained by half within 10 % of the loss, e.g. evil +5 at layer 5)
and with CAFT (the trait's span, 12 directions of the extraction pairs' last-prompt-token
differences, ablated at every layer) against plain
II finetuning: trait score, coherence, final training loss. Run directories resume if interrupted; HTML reports land in --out.

Examples:
  persona demo
  persona demo --traits evil --coefs 2,4,8 --json
  persona demo --full --traits evil
  persona demo --model other-demo.gguf --out runs/demo2
`,
    )
    .action(async function (this: Command, opts: DemoFlags) {
      await withModel(this, opts, async (model, engine) => {
        const t0 = performance.now();
        const result = await runDemo(model, {
          out: opts.out,
          traits: opts.traits,
          rollouts: opts.rollouts,
          questions: opts.questions,
          samples: opts.samples,
          coefs: opts.coefs,
          ...(opts.full ? { full: { engine } } : {}),
          onStage: (trait, stage) => note(`${trait}: ${stage} ...`),
        });
        if (opts.json) return printJson(result);
        print(demoSummary(result));
        if (result.failed.length > 0) process.exitCode = 1;
        print(`done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      });
    });
}
