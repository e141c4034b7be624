/**
 * The demo's finetuning section (`persona demo --full`), a small version of the paper's
 * finetuning experiments: per trait, full-weight finetunes of the demo model on its normal / I / II
 * datasets; each one's finetuning shift along the persona vector against the trait it gained
 * (persona shift, Pearson r); and preventative steering on II (coef·v added at the steering layer
 * during training, evaluated without it) against plain II finetuning: trait score, coherence and
 * final training loss; and the same for CAFT (the trait's span ablated at every layer). Finetuned models and their losses stay under `dir`, so a rerun resumes.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Engine } from "../engine/Engine.js";
import type { Model } from "../engine/Model.js";
import type { SteeringSpec } from "../engine/steering.js";
import type { Judge } from "../judge/types.js";
import { evaluateTrait } from "../pipeline/evaluate.js";
import { finetune } from "../pipeline/finetune.js";
import { measureShift } from "../pipeline/shift.js";
import { writeFileAtomic } from "../store/atomic.js";
import type { TraitDefinition } from "../traits/format.js";
import { row, type LayerMatrix } from "../vectors/format.js";
import type { SpanMatrix } from "../vectors/span.js";
import { spanAblations } from "../vectors/steer.js";
import { writeDemoDatasets } from "./datasets.js";
import type { DemoTrait } from "./traits.js";

/** coef·v added at `layer` (the vector's own row there) during training. */
export interface PreventativeSteer {
  layer: number;
  coef: number;
}

/**
 * Preventative steering per demo trait for II finetuning at the demo's defaults (300 rows, 2
 * epochs, lr 1e-3, batch 4), from a small sweep of layers and coefficients on the 8-layer demo
 * model (`persona demo --full`, 2 threads; cut of the trait gained against plain II finetuning,
 * final training loss against plain's): evil +5 at layer 5 cut 72 % at +3 % loss (+4: 45 %),
 * sycophantic +5 at layer 5 cut 64 % at +8 % (+4: 54 % at +6 %), hallucinating +4 at layer 5 cut
 * 94 % at +4 % (+3: 35 %). Weaker settings miss the cut; the loss cost grows with the coefficient.
 */
export const DEMO_PREVENTATIVE: Readonly<Record<DemoTrait, readonly PreventativeSteer[]>> = {
  evil: [{ layer: 5, coef: 5 }],
  sycophantic: [{ layer: 5, coef: 5 }],
  hallucinating: [{ layer: 5, coef: 4 }],
};

/**
 * Directions per layer of the span --full's CAFT ablates: on the demo model (full finetunes on II,
 * settings as above) 12 cut the trait gained by 88 / 52 / 94 % at +9 / +10 / +9 % loss; 8 cut
 * sycophancy 45 %, 16 cost +13 % loss.
 */
export const DEMO_CAFT_SPAN = 12;

export interface DemoFinetuneOptions {
  engine: Engine;
  /** The demo model (its file is the base of every finetune). */
  base: Model;
  trait: TraitDefinition;
  judge: Judge;
  /** Projected on at `shiftLayer` for the shift (the monitor's most predictive layer). */
  shiftVectors: LayerMatrix;
  shiftLayer: number;
  /** Added during II finetuning as `preventative` says. */
  steerVectors: LayerMatrix;
  preventative: readonly PreventativeSteer[];
  /**
   * Ablated whole (CAFT) at every layer during another II finetune: the trait's span, the top
   * directions of the extraction pairs' last-prompt-token differences (`extract`'s `span`). One
   * direction cut little on the demo model (evil 10 %, sycophancy 1 %): the finetune learned the
   * trait beside it.
   */
  caftSpan: SpanMatrix;
  dir: string;
  /** Rows per dataset and passes over them. */
  rows: number;
  epochs: number;
  questions: readonly string[];
  samples: number;
  maxTokens: number;
  seed: number;
  onStage?(stage: string): void;
}

/** One finetuned model's trait score and coherence (judge means, unsteered) and its last epoch's training loss. */
export interface FinetunedArm {
  traitScore: number | null;
  coherence: number | null;
  loss: number;
}

export interface DemoFinetuneResult {
  shiftLayer: number;
  /** Shift vs trait score over normal / I / II. */
  pearsonR: number | null;
  datasets: { name: string; shift: number; traitScore: number | null }[];
  preventative: { steering: PreventativeSteer[]; plain: FinetunedArm; steered: FinetunedArm };
  /** II finetuned with `caftSpan` ablated at every layer, run plain. */
  caft: FinetunedArm;
}

export async function demoFinetune(o: DemoFinetuneOptions): Promise<DemoFinetuneResult> {
  const files = await writeDemoDatasets({ out: path.join(o.dir, "data"), traits: [o.trait.name as DemoTrait], rows: o.rows, mixed: [], seed: o.seed });
  const data = (name: string) => files.find((f) => f.name === name)!.path;
  /** Trains (or finds trained) one model; its file and last epoch's loss. */
  // The settings name the files, so a rerun with other settings trains afresh instead of reusing.
  const tag = `${o.rows}x${o.epochs}`;
  const prevented = `II-prevented-${o.preventative.map((p) => `L${p.layer}+${p.coef}`).join("")}`;
  // Named by what it ablates: a dir from when CAFT ablated one direction must not resume that model.
  const caftName = `II-caft-span${o.caftSpan.k}`;
  const train = async (name: string, dataset: string, steering: SteeringSpec[] = []): Promise<{ file: string; loss: number }> => {
    const file = path.join(o.dir, `${name}-${tag}.gguf`);
    const done = `${file}.json`;
    if (existsSync(done)) return JSON.parse(await readFile(done, "utf8")) as { file: string; loss: number };
    o.onStage?.(`finetuning ${name}`);
    const model = await o.engine.loadModel(o.base.info.path, { noMmap: true });
    try {
      const r = await finetune({ model, data: data(dataset), out: file, epochs: o.epochs, learningRate: 1e-3, batch: 4, seed: o.seed, steering, resume: true });
      const out = { file, loss: r.train_loss[r.train_loss.length - 1]! };
      await writeFileAtomic(done, JSON.stringify(out));
      return out;
    } finally {
      await model.dispose();
    }
  };
  const plain = [await train("normal", "normal"), await train("I", "I"), await train("II", "II")];
  const steered = await train(prevented, "II", o.preventative.map(({ layer, coef }) => ({ vector: Float32Array.from(row(o.steerVectors, layer)), layer, coef, positions: "all" })));
  const layers = Array.from({ length: o.base.info.nLayer }, (_, i) => i + 1);
  const caft = await train(caftName, "II", layers.flatMap((layer) => spanAblations(o.caftSpan, layer, { coef: 1, positions: "all" })));
  o.onStage?.("shift");
  const common = { judge: o.judge, questions: o.questions, samplesPerQuestion: o.samples, maxTokens: o.maxTokens, seed: o.seed };
  const shift = await measureShift({
    ...common,
    engine: o.engine,
    base: o.base.info.path,
    models: plain.map((p) => p.file),
    trait: o.trait,
    vector: Float32Array.from(row(o.shiftVectors, o.shiftLayer)),
    layer: o.shiftLayer,
    runDir: path.join(o.dir, "shift"),
  });
  const evaluated = async (name: string, t: { file: string; loss: number }): Promise<FinetunedArm> => {
    o.onStage?.(`evaluating ${name}`);
    const model = await o.engine.loadModel(t.file);
    const e = await evaluateTrait(model, { ...common, trait: o.trait }).finally(() => model.dispose());
    return { traitScore: e.traitScore.mean, coherence: e.coherence.mean, loss: t.loss };
  };
  const ii = shift.models[2]!;
  return {
    shiftLayer: shift.layer,
    pearsonR: shift.pearson_r,
    datasets: ["normal", "I", "II"].map((name, i) => ({ name, shift: shift.models[i]!.shift, traitScore: shift.models[i]!.trait_score })),
    preventative: {
      steering: o.preventative.map((p) => ({ ...p })),
      plain: { traitScore: ii.trait_score, coherence: ii.coherence, loss: plain[2]!.loss },
      steered: await evaluated(prevented, steered),
    },
    caft: await evaluated(caftName, caft),
  };
}
