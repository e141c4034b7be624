/**
 * The public API of `persona-vectors`: what is exported here (and from `persona-vectors/demo`,
 * the demo world) is public and follows semver; every other module under src/ is internal and may
 * change in any release, even where its symbols are exported for the project's own use. Layers and
 * what may import what: CONTRIBUTING.md.
 */
export { Engine, type EngineOptions, type LoadModelOptions, type SystemInfo } from "./engine/Engine.js";
export { Model } from "./engine/Model.js";
export type { RunTotals } from "./engine/worker/core.js";
export {
  DecodeLoop,
  GenerationStream,
  type LoopOptions,
  type LoopRequest,
  type LoopResult,
  type LoopStats,
  type StreamEvent,
} from "./engine/DecodeLoop.js";
export type { LoraAdapter } from "./engine/lora.js";
export type { SteeringSpec, ResolvedSteering, Positions } from "./engine/steering.js";
export type { SampleActivations, SampleProjections, ProbeSpec, ResolvedProbes } from "./engine/capture.js";
export type * from "./engine/types.js";
export { PersonaError, type PersonaErrorCode } from "./errors.js";

export { readVectors, writeVectors, updateVectorsMeta, row, type PersonaVectors, type LayerMatrix } from "./vectors/format.js";
export { cosine, project, norm, cosinePerLayer } from "./vectors/math.js";
export { loadSteering, steeringSpecs, type SteeringRef } from "./vectors/steer.js";
export { exportControlVector, importControlVector } from "./vectors/interop/cvec.js";
export { loadVectorsFile, mergeVectors, type ForeignVectorsOptions } from "./vectors/load.js";
export { ptToVectors } from "./vectors/interop/torch.js";

export { loadTrait, listTraits } from "./traits/registry.js";
export { systemPrompt, type TraitDefinition, type TraitSplit } from "./traits/format.js";
export { generateTrait } from "./traits/generate.js";

export type { Judge, JudgeInput, JudgeMetric } from "./judge/types.js";
export { resolveJudge } from "./judge/resolve.js";
export { OpenAIJudge } from "./judge/openai.js";
export { AnthropicJudge } from "./judge/anthropic.js";
export { CachedJudge } from "./judge/cache.js";
export { LocalJudge } from "./judge/local.js";

export { pullModel, parseHubRef, type PullOptions, type PullResult } from "./hub/pull.js";
export { resolveModelRef } from "./hub/resolve.js";
export { convertHf, type ConvertHfOptions } from "./convert/hf.js";
export { convertLora } from "./convert/lora.js";

export { extractPersonaVectors, type ExtractOptions, type ExtractResult } from "./pipeline/extract.js";
export { evaluateTrait, evaluateSettings } from "./pipeline/evaluate.js";
export { sweepSteering, pickBestLayer, runSweep, storeBestLayer, type SweepRunOptions } from "./pipeline/sweep.js";
export { filterPairs } from "./pipeline/filter.js";
export { screenDataset, summarizeScores, rocAuc, type ScreenOptions, type ScreenResult, type ScreenSummary, type ScreenTrait, type ScoreLine } from "./pipeline/screen.js";
export { readDataset, type DatasetRecord, type TrainingSample } from "./pipeline/dataset.js";
export { monitorTrait, gradedMonitorPrompts, readMonitorPrompts, monitorJson, type MonitorOptions, type MonitorResult, type MonitorPrompt, type MonitorPoint } from "./pipeline/monitor.js";
export { captureActivationsToFile, countCaptureInputs, readCaptureInputs, type CaptureInput, type CaptureToFileOptions } from "./pipeline/activations.js";
export type { RunStore, RecordStore } from "./pipeline/rundir.js";
