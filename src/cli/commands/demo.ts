import type { Command } from "commander";
import path from "node:path";
import { runDemo } from "../../demo/run.js";
import { DEMO_TRAITS, isDemoTrait, type DemoTrait } from "../../demo/traits.js";
import { PersonaError } from "../../errors.js";
import { intArg } from "../args/numbers.js";
import { withEngineFlags, withModel } from "../engine.js";
import { note, print, printJson, table } from "../output.js";
import { parseCoefList } from "./sweep.js";
import { formatStats } from "./eval.js";

interface DemoFlags {
  model: string;
  out: string;
  traits: DemoTrait[];
  rollouts: number;
  questions: number;
  samples: number;
  coefs?: number[];
  json?: boolean;
  threads?: number;
}

function parseTraits(text: string): DemoTrait[] {
  const names = text.split(",").map((s) => s.trim());
  for (const n of names) {
    if (!isDemoTrait(n)) throw new PersonaError("E_BAD_INPUT", `--traits: unknown demo trait "${n}" (known: ${DEMO_TRAITS.join(", ")})`);
  }
  return names as DemoTrait[];
}

const fmt = (x: number | null | undefined) => (x === null || x === undefined ? "-" : x.toFixed(1));

/** `persona demo`: extraction, steering sweep and suppression for the demo traits, with a summary. */
export function register(program: Command): void {
  withEngineFlags(
    program
      .command("demo")
      .description("run the whole method on the built-in demo model: extract, sweep and steer evil, sycophancy and hallucination")
      .option("-o, --out <dir>", "where run directories and reports go", "runs/demo")
      .option("--traits <list>", `comma list of demo traits (default: ${DEMO_TRAITS.join(",")})`, parseTraits, [...DEMO_TRAITS])
      .option("--rollouts <n>", "extraction rollouts per instruction pair × question × polarity", intArg(1), 2)
      .option("--questions <n>", "evaluation questions per sweep cell", intArg(1), 10)
      .option("--samples <n>", "rollouts per question per sweep cell", intArg(1), 2)
      .option("--coefs <list>", "steering coefficients of the sweep (default 1,2,4,6,8)", parseCoefList)
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
trait suppressed. Run directories resume if interrupted; HTML reports land in --out.

Examples:
  persona demo
  persona demo --traits evil --coefs 2,4,8 --json
  persona demo --model other-demo.gguf --out runs/demo2
`,
    )
    .action(async function (this: Command, opts: DemoFlags) {
      await withModel(this, opts, async (model) => {
        const t0 = performance.now();
        const result = await runDemo(model, {
          out: opts.out,
          traits: opts.traits,
          rollouts: opts.rollouts,
          questions: opts.questions,
          samples: opts.samples,
          coefs: opts.coefs,
          onStage: (trait, stage) => note(`${trait}: ${stage} ...`),
        });
        if (opts.json) return printJson(result);
        print(
          table(
            ["trait", "kept", "pos/neg score", "baseline", "best layer", "steered (coef)", "coherence", "pos prompt → −coef"],
            result.traits.map((r) => {
              const best = r.sweep.grid.find((c) => c.layer === r.sweep.bestLayer && c.coef === r.sweep.bestCoef);
              const c = r.extraction.counts;
              return [
                r.trait,
                `${c.kept}/${c.total}`,
                `${fmt(r.extraction.scores.pos.trait)}/${fmt(r.extraction.scores.neg.trait)}`,
                r.sweep.baseline ? formatStats(r.sweep.baseline.traitScore) : "-",
                r.sweep.bestLayer === null ? "none" : String(r.sweep.bestLayer),
                best ? `${formatStats(best.traitScore)} (${best.coef})` : "-",
                best ? fmt(best.coherence.mean) : "-",
                r.suppression ? `${fmt(r.suppression.unsteered.mean)} → ${fmt(r.suppression.steered.mean)} (${r.suppression.coef})` : "-",
              ];
            }),
          ),
        );
        for (const f of result.failed) print(`${f.trait}: no vectors — ${f.reason}`);
        if (result.failed.length > 0) process.exitCode = 1;
        print("");
        for (const c of result.cosines) print(`cosine(${c.a}, ${c.b}) at layer ${c.layer}: ${c.cosine.toFixed(3)}`);
        print(`\nreports: ${result.traits.map((r) => path.relative(process.cwd(), r.report)).join(", ")}`);
        print(`done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      });
    });
}
