/**
 * Finetuning shift (spec §2): for each finetuned model (or base + LoRA adapter), the mean last-prompt-token activation over
 * the trait's evaluation questions minus the base model's, projected on the unit persona vector
 * (by linearity: the difference of the mean projections), next to the model's trait expression
 * score; Pearson r across the models says whether the vector predicts what finetuning did.
 *
 * Run directory:
 *   run.json         config (base fingerprint, trait, vector, layer, judge, sampling)
 *   models.jsonl     one record per finished model (fsync'd), keyed by its file fingerprint: a
 *                    rerun skips them
 *   shift.json       the summary (the --json contract), written atomically at the end
 *   report.html      shift vs trait score scatter and the table
 */
import path from "node:path";
import type { Engine } from "../engine/Engine.js";
import type { Model } from "../engine/Model.js";
import { PersonaError } from "../errors.js";
import type { Judge } from "../judge/types.js";
import { htmlPage, htmlTable, metaList, plots, section } from "../report/html.js";
import { pearson, scatterPlot } from "../report/scatter.js";
import type { TraitDefinition } from "../traits/format.js";
import { type EvalProgress, evaluateTrait } from "./evaluate.js";
import { fingerprintFile, hashOf, RunDir } from "./rundir.js";

export interface ShiftModelResult {
  model: string;
  /** Mean projection shift along the unit vector, finetuned − base. */
  shift: number;
  trait_score: number | null;
  coherence: number | null;
}

export interface ShiftResult {
  trait: string;
  layer: number;
  models: ShiftModelResult[];
  pearson_r: number | null;
}

export interface ShiftOptions {
  engine: Engine;
  base: string;
  /** Finetuned models (GGUF files), or with `lora`, LoRA adapters applied to the base. */
  models: readonly string[];
  /** `models` are GGUF LoRA adapters for the base, not models. Defaults to false. */
  lora?: boolean;
  trait: TraitDefinition;
  /** The persona vector at `layer` (any length; projections use its unit vector). */
  vector: Float32Array;
  layer: number;
  judge: Judge;
  runDir: string;
  restart?: boolean;
  /** Questions to ask. Defaults to the trait's evaluation questions. */
  questions?: readonly string[];
  samplesPerQuestion?: number;
  maxTokens?: number;
  temperature?: number;
  seed?: number;
  onModel?(i: number, model: string): void;
  onProgress?(p: EvalProgress): void;
  signal?: AbortSignal;
}

/** Mean projection of the last prompt token of each templated question (no system prompt) onto the probe. */
async function meanPromptProjection(model: Model, questions: readonly string[], vector: Float32Array, layer: number, signal?: AbortSignal): Promise<number> {
  const probes = model.probes([{ layer, vector }]);
  const samples = [];
  for (const q of questions) {
    const tokens = await model.encodeChat([{ role: "user", content: q }], { addGenerationPrompt: true });
    samples.push({ tokens, promptLength: tokens.length });
  }
  const proj = await model.project(samples, probes, signal ? { signal } : {});
  return proj.reduce((a, p) => a + p.promptLast[0]!, 0) / proj.length;
}

interface ModelRecord extends ShiftModelResult {
  projection: number;
}

export async function measureShift(o: ShiftOptions): Promise<ShiftResult> {
  if (o.models.length === 0) throw new PersonaError("E_BAD_INPUT", "give at least one finetuned model");
  const questions = o.questions ?? o.trait.eval.questions;
  if (questions.length === 0) throw new PersonaError("E_BAD_INPUT", `trait ${o.trait.name} has no evaluation questions`);
  const sampling = { samplesPerQuestion: o.samplesPerQuestion ?? 10, maxTokens: o.maxTokens ?? 1000, temperature: o.temperature ?? 1, seed: o.seed ?? 0 };
  const config = {
    base: await fingerprintFile(o.base),
    trait: o.trait.name,
    questions: hashOf(questions),
    vector: hashOf(Array.from(o.vector)),
    layer: o.layer,
    judge: o.judge.id,
    ...sampling,
  };
  const run = await RunDir.open(o.runDir, "shift", config, { restart: o.restart ?? false });
  const records = await run.records<ModelRecord>("models.jsonl");
  try {
    const baseModel = await o.engine.loadModel(o.base);
    let baseProjection: number;
    try {
      if (baseModel.info.nEmbd !== o.vector.length) {
        throw new PersonaError("E_SHAPE", `the vector has ${o.vector.length} values but ${o.base} has n_embd ${baseModel.info.nEmbd}`);
      }
      baseProjection = await meanPromptProjection(baseModel, questions, o.vector, o.layer, o.signal);
    } finally {
      await baseModel.dispose();
    }
    const out: ModelRecord[] = [];
    for (const [i, file] of o.models.entries()) {
      o.onModel?.(i, file);
      const key = `${o.lora ? "lora:" : ""}${await fingerprintFile(file)}`;
      let rec = records.get(key);
      if (!rec) {
        const m = o.lora ? await o.engine.loadModel(o.base, { loras: [{ path: file }] }) : await o.engine.loadModel(file);
        try {
          if (m.info.nEmbd !== o.vector.length || m.info.nLayer < o.layer) {
            throw new PersonaError("E_SHAPE", `${file} (n_embd ${m.info.nEmbd}, ${m.info.nLayer} layers) does not match the base model's vector`);
          }
          const projection = await meanPromptProjection(m, questions, o.vector, o.layer, o.signal);
          const ev = await evaluateTrait(m, { trait: o.trait, judge: o.judge, questions, ...sampling, ...(o.onProgress ? { onProgress: o.onProgress } : {}), ...(o.signal ? { signal: o.signal } : {}) });
          rec = { model: file, projection, shift: projection - baseProjection, trait_score: ev.traitScore.mean, coherence: ev.coherence.mean };
        } finally {
          await m.dispose();
        }
        await records.append(key, rec);
      }
      out.push({ ...rec, model: file });
    }
    const scored = out.filter((r) => r.trait_score !== null);
    const result: ShiftResult = {
      trait: o.trait.name,
      layer: o.layer,
      models: out.map(({ model, shift, trait_score, coherence }) => ({ model, shift, trait_score, coherence })),
      pearson_r: pearson(scored.map((r) => r.shift), scored.map((r) => r.trait_score!)),
    };
    await run.writeArtifact("shift.json", `${JSON.stringify(result, null, 2)}\n`);
    await run.writeArtifact("report.html", shiftReport(result, o.base, baseProjection));
    return result;
  } finally {
    await records.close();
  }
}

function shiftReport(r: ShiftResult, base: string, baseProjection: number): string {
  const fmt = (v: number | null, d = 1) => (v === null ? "–" : v.toFixed(d));
  const body =
    metaList([
      ["trait", r.trait],
      ["layer", String(r.layer)],
      ["base model", base],
      ["base projection", baseProjection.toFixed(3)],
      ["Pearson r", r.pearson_r === null ? "n/a" : r.pearson_r.toFixed(3)],
    ]) +
    section(
      "Shift vs trait expression",
      plots(
        scatterPlot({
          points: r.models.filter((m) => m.trait_score !== null).map((m) => ({ x: m.shift, y: m.trait_score!, label: path.basename(m.model) })),
          xLabel: "projection shift (finetuned − base)",
          yLabel: `${r.trait} score`,
        }),
      ),
    ) +
    section(
      "Models",
      htmlTable(
        ["model", "shift", "trait score", "coherence"],
        r.models.map((m) => [m.model, m.shift.toFixed(3), fmt(m.trait_score), fmt(m.coherence)]),
      ),
    );
  return htmlPage({ title: `Finetuning shift: ${r.trait}`, subtitle: "last-prompt-token activation shift along the persona vector vs trait expression", body });
}
