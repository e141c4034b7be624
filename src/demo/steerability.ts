/**
 * Steerability of the demo model (issue 17): whether adding a trait's vector steers the default
 * assistant into the trait while its replies stay coherent, and whether subtracting it under the
 * trait's pos system prompt takes the trait away, as in the paper. One batched evaluation per
 * trait (every coefficient and both directions together, common random numbers), plus what
 * explains the result: how large the vector is against the residual stream it is added to, and
 * how the three traits' vectors align.
 */
import type { Model } from "../engine/Model.js";
import type { Positions, SteeringSpec } from "../engine/steering.js";
import { promptStateSpec } from "../pipeline/sweep.js";
import { PersonaError } from "../errors.js";
import { evaluateSettings, summarize, type EvalSetting, type ScoreStats } from "../pipeline/evaluate.js";
import { systemPrompt } from "../traits/format.js";
import { loadTrait } from "../traits/registry.js";
import { presentTensors, row, selectTensor, type LayerMatrix, type VectorTensorName } from "../vectors/format.js";
import { loadVectorsFile } from "../vectors/load.js";
import { cosine, layerNorms } from "../vectors/math.js";
import { loadVectorSource } from "../vectors/steer.js";
import { DemoJudge } from "./judge.js";
import "./register.js";
import { DEMO_TRAITS, type DemoTrait } from "./traits.js";

/** Issue 17's bounds on the steering curves. */
export const STEERING_BOUNDS = {
  /** +coef on the default assistant: from at most this at coef 0 ... */
  plusStartMax: 15,
  /** ... up to at least this ... */
  plusReach: 60,
  /** ... with coherence at least this at every coefficient on the way. */
  plusCoherence: 60,
  /** −coef under the pos prompt: the trait below this ... */
  minusBelow: 20,
  /** ... with coherence at least this. */
  minusCoherence: 70,
} as const;

export interface SteerabilityOptions {
  /** Vectors file of each trait (`FILE[#TENSOR]`, or a trait name registered for the model). */
  vectors: Readonly<Record<DemoTrait, string>>;
  /** The traits checked, in this order. Defaults to all three. */
  traits?: readonly DemoTrait[];
  /**
   * Steered layers, the coefficient spread evenly over them (coef/n of each layer's row at each);
   * undefined = each file's stored best layer alone.
   */
  layers?: readonly number[];
  /** Non-negative coefficients, ascending, starting at 0; added on the default assistant and subtracted under the pos prompts. */
  coefs: readonly number[];
  positions?: Positions;
  /**
   * Also steers the prompt's state: at coefficient c, c·ratio of the file's `prompt_last` row at
   * `layer` is added on the prompt positions (subtracted for −c), on top of the steering above.
   * The persona is a state the system prompt sets at the last prompt token, so writing it there
   * asks less of the reply's vector (issue 17's trade of trait for coherence).
   */
  promptLast?: PromptLastSteering;
  /** First n evaluation questions. Defaults to all 20. */
  questions?: number;
  /** Replies per question and cell. Defaults to 4. */
  samples?: number;
  /** Defaults to 64. */
  maxTokens?: number;
  seed?: number;
}

export interface PromptLastSteering {
  layer: number;
  ratio: number;
}

export interface SteerCell {
  coef: number;
  traitScore: ScoreStats;
  coherence: ScoreStats;
}

export interface TraitSteerability {
  trait: DemoTrait;
  layers: number[];
  tensor: VectorTensorName;
  promptLast?: PromptLastSteering;
  /** +coef·v on the default assistant (no system prompt), one cell per coefficient. */
  plus: SteerCell[];
  /** −coef·v under the trait's pos system prompts (spread over its instruction pairs). */
  minus: SteerCell[];
  /** ‖v‖ at every layer 0..n_layer. */
  vectorNorm: number[];
  /**
   * ‖·‖ at every layer of each reduction the file holds: where `prompt_last` stays small the
   * persona has not reached the last prompt token yet, so there is no state to steer there.
   */
  tensorNorms: Partial<Record<VectorTensorName, number[]>>;
  /** Mean ‖residual‖ of the last prompt token of the default assistant's prompts, at every layer. */
  residualNorm: number[];
  bounds: SteeringBoundsCheck;
}

export interface SteeringBoundsCheck {
  /** +coef: the trait score never falls as the coefficient grows, and starts ≤ 15. */
  plusMonotone: boolean;
  /** +coef: the first coefficient reaching ≥ 60 with every cell up to it at coherence ≥ 60; null when none. */
  plusCoef: number | null;
  /** −coef: the smallest coefficient bringing the trait < 20 with coherence ≥ 70; null when none. */
  minusCoef: number | null;
  pass: boolean;
}

export interface SteerabilityResult {
  traits: TraitSteerability[];
  /** Cosine between two traits' vectors at the first trait's (first) steered layer. */
  cosines: { a: DemoTrait; b: DemoTrait; layer: number; cosine: number }[];
}

const mean = (s: ScoreStats) => s.mean ?? Number.NaN;

export function checkSteeringBounds(plus: readonly SteerCell[], minus: readonly SteerCell[]): SteeringBoundsCheck {
  const b = STEERING_BOUNDS;
  const scores = plus.map((c) => mean(c.traitScore));
  const plusMonotone = scores.length > 0 && scores[0]! <= b.plusStartMax && scores.every((s, i) => i === 0 || s >= scores[i - 1]!);
  let plusCoef: number | null = null;
  for (const c of plus) {
    if (!(mean(c.coherence) >= b.plusCoherence)) break;
    if (mean(c.traitScore) >= b.plusReach) {
      plusCoef = c.coef;
      break;
    }
  }
  const minusCell = minus.find((c) => mean(c.traitScore) < b.minusBelow && mean(c.coherence) >= b.minusCoherence);
  const minusCoef = minusCell?.coef ?? null;
  return { plusMonotone, plusCoef, minusCoef, pass: plusMonotone && plusCoef !== null && minusCoef !== null };
}

function checkCoefs(coefs: readonly number[]): void {
  if (coefs.length === 0 || coefs[0] !== 0 || coefs.some((c, i) => !Number.isFinite(c) || c < 0 || (i > 0 && c <= coefs[i - 1]!))) {
    throw new PersonaError("E_BAD_INPUT", `steerability coefficients must be ascending, non-negative and start at 0, got ${coefs.join(",")}`);
  }
}

async function tensorNorms(file: string, nLayer: number): Promise<Partial<Record<VectorTensorName, number[]>>> {
  const all = await loadVectorsFile(file, { nLayer });
  return Object.fromEntries(presentTensors(all).map((name) => [name, layerNorms(all.tensors[name]!)]));
}

async function residualNorms(model: Model, questions: readonly string[]): Promise<number[]> {
  const samples = await Promise.all(questions.map(async (q) => ({ tokens: await model.encodeChat([{ role: "user", content: q }], { addGenerationPrompt: true }), promptLength: 0 })));
  // promptLength = the whole sequence: every token is prompt, the last one is the last prompt token.
  const caps = await model.capture(samples.map((s) => ({ tokens: s.tokens, promptLength: s.tokens.length })));
  const nLayers = model.info.nLayer + 1;
  const out = new Array<number>(nLayers).fill(0);
  for (const c of caps) {
    layerNorms({ nLayerPlus1: nLayers, nEmbd: model.info.nEmbd, data: c.promptLast }).forEach((n, l) => (out[l]! += n / caps.length));
  }
  return out;
}

export async function demoSteerability(model: Model, opts: SteerabilityOptions): Promise<SteerabilityResult> {
  checkCoefs(opts.coefs);
  const judge = new DemoJudge();
  const traits: TraitSteerability[] = [];
  const names = opts.traits ?? DEMO_TRAITS;
  const matrices = new Map<DemoTrait, { matrix: LayerMatrix; layer: number }>();
  for (const name of names) {
    const trait = await loadTrait(name);
    const v = await loadVectorSource(opts.vectors[name], model.info);
    const layers = opts.layers ? [...opts.layers] : v.meta.bestLayer === undefined ? [] : [v.meta.bestLayer];
    if (layers.length === 0) throw new PersonaError("E_BAD_INPUT", `${v.path} has no best layer; give one with --layer`);
    for (const layer of layers) {
      if (!Number.isInteger(layer) || layer < 1 || layer > model.info.nLayer) throw new PersonaError("E_SHAPE", `layer ${layer} is out of range 1..${model.info.nLayer}`);
    }
    matrices.set(name, { matrix: v.matrix, layer: layers[0]! });
    const positions = opts.positions ?? "response";
    const specs = (coef: number): SteeringSpec[] =>
      layers.map((layer) => ({ vector: Float32Array.from(row(v.matrix, layer)), layer, coef: coef / layers.length, positions }));
    const pl = opts.promptLast;
    const promptState = pl ? { matrix: selectTensor(v.file, "prompt_last"), ratio: pl.ratio } : null;
    const steer = (coef: number) => model.steering(pl && promptState ? [...specs(coef), promptStateSpec(promptState, pl.layer, coef)] : specs(coef));
    const questions = trait.eval.questions.slice(0, opts.questions);
    const samples = opts.samples ?? 4;
    const common = { trait, judge, questions, maxTokens: opts.maxTokens ?? 64, seed: opts.seed ?? 0 };
    const plusRuns = await evaluateSettings(model, { ...common, samplesPerQuestion: samples, settings: opts.coefs.map((coef) => ({ key: `plus/${coef}`, steering: steer(coef) })) });
    // The pos-prompt cells spread their samples over the trait's instruction pairs, as the evidence does.
    const pairs = trait.eval.instruction;
    const minusSettings: EvalSetting[] = opts.coefs.flatMap((coef) =>
      pairs.map((p, i) => ({ key: `minus/${coef}/${i}`, steering: steer(-coef), system: systemPrompt(trait.name, trait.antonym, p.pos, "pos") })),
    );
    const minusRuns = await evaluateSettings(model, { ...common, samplesPerQuestion: Math.max(1, Math.ceil(samples / pairs.length)), settings: minusSettings });
    const results = [...plusRuns, ...minusRuns];
    const cell = (prefix: string, coef: number): SteerCell => {
      const all = results.filter((r) => r.key === prefix || r.key.startsWith(`${prefix}/`)).flatMap((r) => r.samples);
      return { coef, traitScore: summarize(all.map((s) => s.trait)), coherence: summarize(all.map((s) => s.coherence)) };
    };
    const plus = opts.coefs.map((c) => cell(`plus/${c}`, c));
    const minus = opts.coefs.map((c) => cell(`minus/${c}`, c));
    traits.push({
      trait: name,
      layers,
      tensor: v.tensor,
      ...(pl ? { promptLast: pl } : {}),
      plus,
      minus,
      vectorNorm: layerNorms(v.matrix),
      tensorNorms: await tensorNorms(v.path, model.info.nLayer),
      residualNorm: await residualNorms(model, questions),
      bounds: checkSteeringBounds(plus, minus),
    });
  }
  const cosines: SteerabilityResult["cosines"] = [];
  names.forEach((a, i) => {
    for (const b of names.slice(i + 1)) {
      const va = matrices.get(a)!;
      const vb = matrices.get(b)!;
      const layer = va.layer;
      cosines.push({ a, b, layer, cosine: cosine(row(va.matrix, layer), row(vb.matrix, layer)) });
    }
  });
  return { traits, cosines };
}
