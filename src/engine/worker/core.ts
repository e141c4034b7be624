/**
 * Everything the engine worker does, as plain synchronous methods over native objects, so it can
 * be driven by the worker's message loop (and nothing else touches native memory).
 */
import { availableParallelism } from "node:os";
import type { LoraAdapter } from "../lora.js";
import { PersonaError } from "../../errors.js";
import { runJobs, type Job, type JobResult, type RunHooks, type SamplerSettings, type SchedulerStats } from "../batching.js";
import { discoverLibraries, isGpuVariant, type GpuChoice, type LibraryPaths } from "../ffi/discover.js";
import { loadEvalFilter, loadLlama, type EvalFilterApi, type LlamaApi } from "../ffi/llama.js";
import { NativeContext, type EvalStats } from "../native/NativeContext.js";
import { NativeModel } from "../native/NativeModel.js";
import { NativeSampler } from "../native/NativeSampler.js";
import { getNumber, getString, readGguf } from "../gguf/reader.js";
import { GgmlType, ggmlTypeName } from "../gguf/types.js";
import type { TrainResult, TrainSpec } from "../train/options.js";
import type { LlamaHParams } from "../train/graph.js";
import { trainModel, type TrainHooks } from "../train/NativeTrainer.js";
import { saveModel } from "../train/save.js";
import { WorkerLoop, type LoopRequestEvents, type LoopStats } from "./loop.js";
import { PROMPT_CACHE, planTree, scoreTree, type PathScore } from "../tree.js";
import type { ChatMessage, ModelInfo } from "../types.js";

/** llama.cpp's LLAMA_MAX_SEQ. */
const MAX_SEQUENCES = 256;

export interface CoreOptions {
  gpu: GpuChoice;
  /**
   * A CPU backend built from the pinned source (`npm run build:llama`) to load instead of the
   * prebuilt variants: a path `checkCpuBackend` accepted (Engine.create checks it before recording
   * the process's choice).
   */
  cpuBackend?: string;
  /** Forward llama.cpp's log lines (to stderr via the host). */
  verbose: boolean;
  /** CPU threads for decoding. */
  threads: number;
  /** Polling level of each context's CPU threadpool, 0..100. */
  poll: number;
  /**
   * The eval filter library (`npm run build:hooks`) that hooked decodes use; `required`: an error
   * when it does not load, else a note (`hooksNote`) and the JS path.
   */
  evalFilter?: { path: string; required: boolean };
}

export interface ContextShape {
  nSeqMax: number;
  /** KV cells each sequence needs at most. */
  nCtxPerSeq: number;
  nBatch: number;
  exact: boolean;
}

export interface RunRequest {
  modelId: number;
  jobs: Job[];
  shape: ContextShape;
  /** Jobs share prompt prefixes (see runJobs). */
  sharePrefixes: boolean;
}

/** The scheduler's counters that a model's runs add up. */
const TOTALLED = ["steps", "tokensDecoded", "promptTokensDecoded", "tokensReused", "tokensForked"] as const;

/** What a model's batch runs (generate, capture, project, logprobs) decoded so far: their number and their counters' sums. */
export type RunTotals = { runs: number } & Pick<SchedulerStats, (typeof TOTALLED)[number]>;

const GGML_LOG_LEVEL_ERROR = 4;

export class EngineCore {
  readonly api: LlamaApi;
  readonly libraries: LibraryPaths;
  private readonly models = new Map<number, { model: NativeModel; contexts: Map<boolean, NativeContext>; noMmap: boolean; totals: RunTotals }>();
  private nextModelId = 1;
  private readonly loops = new Map<number, WorkerLoop>();
  private nextLoopId = 1;
  /** Contexts created per model: a loop's context is made once, batch runs reuse theirs when big enough. */
  private readonly contextsCreated = new Map<number, number>();
  private readonly errors: string[] = [];
  private readonly threads: number;
  private readonly poll: number;
  private readonly evalFilter: EvalFilterApi | undefined;
  /** Why the eval filter asked for is not used. */
  readonly hooksNote: string | undefined;
  /** Hooked decodes of every context of this engine, and their calls into JS. */
  readonly evalStats: EvalStats = { decodes: 0, jsCalls: 0 };

  constructor(
    options: CoreOptions,
    private readonly log: (text: string) => void,
  ) {
    const found = discoverLibraries(options.gpu);
    if (options.cpuBackend !== undefined && isGpuVariant(found.variant)) {
      throw new PersonaError("E_BAD_INPUT", `a self-built CPU backend goes with the CPU build of llama.cpp, not ${found.variant} (use gpu "cpu")`);
    }
    this.libraries = options.cpuBackend === undefined ? found : { ...found, cpuBackend: options.cpuBackend };
    this.threads = options.threads > 0 ? options.threads : Math.max(1, availableParallelism());
    this.poll = options.poll;
    this.api = loadLlama(this.libraries, (level, text) => {
      if (level === GGML_LOG_LEVEL_ERROR) {
        this.errors.push(text.trim());
        if (this.errors.length > 20) this.errors.shift();
      }
      if (options.verbose) this.log(text);
    });
    if (options.evalFilter) {
      try {
        this.evalFilter = loadEvalFilter(options.evalFilter.path);
      } catch (e) {
        if (options.evalFilter.required) throw e;
        this.hooksNote = (e as Error).message;
      }
    }
  }

  /** Where hooked decodes answer the scheduler's per-node questions: in C (the eval filter) or in JS. */
  get hooks(): "native" | "js" {
    return this.evalFilter ? "native" : "js";
  }

  async loadModel(
    path: string,
    opts: { gpuLayers?: number; noMmap?: boolean; vocabOnly?: boolean; loras?: LoraAdapter[] },
  ): Promise<{ id: number; info: ModelInfo }> {
    const gpuLayers = opts.gpuLayers ?? (isGpuVariant(this.libraries.variant) ? -1 : 0);
    const model = await NativeModel.load(
      this.api,
      path,
      { gpuLayers, noMmap: opts.noMmap ?? false, vocabOnly: opts.vocabOnly ?? false },
      () => this.errors,
    );
    try {
      await model.addLoras(opts.loras ?? []);
    } catch (e) {
      model.free();
      throw e;
    }
    const id = this.nextModelId++;
    const totals = { runs: 0, ...Object.fromEntries(TOTALLED.map((k) => [k, 0])) } as RunTotals;
    this.models.set(id, { model, contexts: new Map(), noMmap: opts.noMmap ?? false, totals });
    return { id, info: model.info };
  }

  freeModel(id: number): void {
    const entry = this.models.get(id);
    if (!entry) return;
    for (const [loopId, loop] of this.loops) if (loop.modelId === id) this.closeLoop(loopId);
    for (const ctx of entry.contexts.values()) ctx.free();
    entry.model.free();
    this.models.delete(id);
  }

  model(id: number): NativeModel {
    const entry = this.models.get(id);
    if (!entry) throw new PersonaError("E_DISPOSED", `model ${id} is not loaded`);
    return entry.model;
  }

  tokenize(id: number, text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array {
    return this.model(id).tokenize(text, addSpecial, parseSpecial);
  }

  detokenize(id: number, tokens: Int32Array, renderSpecial: boolean): string {
    return this.model(id).detokenize(tokens, renderSpecial);
  }

  applyBuiltinTemplate(id: number, messages: ChatMessage[], addAssistant: boolean): string {
    return this.model(id).applyBuiltinTemplate(messages, addAssistant);
  }

  /** Runs jobs to completion, streaming each result as it finishes (loops step in between). */
  async run(req: RunRequest, hooks: RunHooks): Promise<void> {
    const model = this.runnable(req.modelId);
    for (const [i, job] of req.jobs.entries()) this.validateJob(model, job, i);
    const ctx = this.context(req.modelId, req.shape);
    const makeSampler = (s: SamplerSettings) => new NativeSampler(this.api, ctx, s);
    const stats = await runJobs(
      ctx,
      makeSampler,
      model.eogTokens,
      req.jobs,
      {
        ...hooks,
        onResult: (r) => {
          if (req.jobs[r.index]!.sampling) r.text = model.detokenize(r.tokens, false);
          hooks.onResult(r);
        },
      },
      { parallel: req.shape.nSeqMax, sharePrefixes: req.sharePrefixes },
    );
    this.addTotals(req.modelId, stats);
  }

  /** What the model's batch runs decoded so far. */
  runTotals(modelId: number): RunTotals {
    this.model(modelId);
    return { ...this.models.get(modelId)!.totals };
  }

  private addTotals(modelId: number, stats: SchedulerStats): void {
    const t = this.models.get(modelId)?.totals;
    if (!t) return;
    t.runs++;
    for (const k of TOTALLED) t[k] += stats[k];
  }

  /** Opens a decode loop with a context of its own, sized once for `shape`. */
  openLoop(modelId: number, shape: ContextShape): number {
    this.runnable(modelId);
    const ctx = this.createContext(modelId, shape);
    const id = this.nextLoopId++;
    this.loops.set(id, new WorkerLoop(modelId, this.model(modelId), ctx, shape.nCtxPerSeq, () => this.contextsCreated.get(modelId) ?? 0));
    return id;
  }

  submitToLoop(loopId: number, key: number, job: Job, events: LoopRequestEvents): void {
    const loop = this.loop(loopId);
    this.validateJob(this.model(loop.modelId), job, 0);
    loop.submit(key, job, events);
  }

  /** The model a loop runs. */
  loopModel(loopId: number): number {
    return this.loop(loopId).modelId;
  }

  cancelInLoop(loopId: number, key: number): void {
    this.loops.get(loopId)?.cancel(key, new PersonaError("E_ABORTED", "request cancelled"));
  }

  loopStats(loopId: number): LoopStats {
    return this.loop(loopId).stats();
  }

  closeLoop(loopId: number): void {
    this.loops.get(loopId)?.close(new PersonaError("E_DISPOSED", "decode loop closed"));
    this.loops.delete(loopId);
  }

  private loop(loopId: number): WorkerLoop {
    const loop = this.loops.get(loopId);
    if (!loop) throw new PersonaError("E_DISPOSED", "decode loop closed");
    return loop;
  }

  private runnable(modelId: number): NativeModel {
    const model = this.model(modelId);
    if (model.vocabOnly) throw new PersonaError("E_BAD_INPUT", "this model was loaded vocabulary-only; load it fully to run it");
    return model;
  }

  /** Scores token paths after a shared prompt as a prefix tree (see tree.ts). */
  scoreTree(modelId: number, prompt: Int32Array, paths: Int32Array[]): { scores: PathScore[]; reused: number } {
    const model = this.runnable(modelId);
    if (paths.length === 0) return { scores: [], reused: 0 };
    model.validateTokens(prompt);
    for (const p of paths) model.validateTokens(p);
    const plan = planTree(paths);
    const nSeqMax = plan.sequences + PROMPT_CACHE;
    if (nSeqMax > MAX_SEQUENCES) throw new PersonaError("E_BAD_INPUT", `the paths branch into ${plan.sequences} sequences at once; at most ${MAX_SEQUENCES - PROMPT_CACHE}`);
    // Room for the cached prompts too (see tree.ts), assuming they are about this long.
    const cells = (1 + PROMPT_CACHE) * prompt.length + plan.nodes.length;
    const ctx = this.context(modelId, { nSeqMax, nCtxPerSeq: Math.ceil(cells / nSeqMax), nBatch: 512, exact: false });
    return scoreTree(ctx, prompt, plan, this.digitTokens(model));
  }

  private readonly digitCache = new WeakMap<NativeModel, Uint8Array>();

  /** Which tokens' text starts with an ASCII digit, per model. */
  private digitTokens(model: NativeModel): Uint8Array {
    let d = this.digitCache.get(model);
    if (!d) {
      d = new Uint8Array(model.info.nVocab);
      for (let t = 0; t < d.length; t++) {
        const b = model.tokenBytes(t, false);
        d[t] = b.length > 0 && b[0]! >= 0x30 && b[0]! <= 0x39 ? 1 : 0;
      }
      this.digitCache.set(model, d);
    }
    return d;
  }

  /** Trains the model's weights in place (see NativeTrainer); the model must be all-F32 and loaded without mmap. */
  async train(modelId: number, spec: TrainSpec, hooks: TrainHooks): Promise<TrainResult> {
    const entry = this.models.get(modelId);
    if (!entry) throw new PersonaError("E_DISPOSED", `model ${modelId} is not loaded`);
    const { model } = entry;
    if (model.loras.length > 0) throw new PersonaError("E_BAD_INPUT", "training reads the base weights; load the model without LoRA adapters to train it");
    // A LoRA run leaves the weights alone, so a mapped model is fine.
    if (!entry.noMmap && spec.lora === null) {
      throw new PersonaError("E_BAD_INPUT", `training writes the weights: load ${model.info.name} with noMmap: true`);
    }
    const gguf = await readGguf(model.info.path, { maxArrayItems: 0 });
    const notF32 = gguf.tensors.find((t) => t.type !== GgmlType.F32);
    if (notF32) {
      throw new PersonaError(
        "E_BAD_MODEL",
        `training needs an all-F32 model; tensor ${notF32.name} of ${model.info.name} is ${ggmlTypeName(notF32.type)}`,
      );
    }
    const arch = getString(gguf, "general.architecture");
    if (arch !== "llama" && arch !== "qwen2") throw new PersonaError("E_BAD_MODEL", `training supports the llama and qwen2 architectures; ${model.info.name} is ${arch}`);
    const nHead = getNumber(gguf, `${arch}.attention.head_count`) ?? model.info.nHead;
    const hp = {
      nLayer: model.info.nLayer,
      nEmbd: model.info.nEmbd,
      nHead,
      nHeadKv: getNumber(gguf, `${arch}.attention.head_count_kv`) ?? nHead,
      nVocab: model.info.nVocab,
      nCtxTrain: model.info.nCtxTrain,
      rmsEps: getNumber(gguf, `${arch}.attention.layer_norm_rms_epsilon`) ?? 1e-5,
      ropeFreqBase: getNumber(gguf, `${arch}.rope.freq_base`) ?? 10_000,
      arch: arch as LlamaHParams["arch"],
    };
    return trainModel(model, spec, hp, this.threads, hooks);
  }

  save(modelId: number, path: string): Promise<void> {
    return saveModel(this.model(modelId), path);
  }

  dispose(): void {
    for (const loopId of [...this.loops.keys()]) this.closeLoop(loopId);
    for (const id of [...this.models.keys()]) this.freeModel(id);
  }

  private validateJob(model: NativeModel, job: Job, i: number): void {
    if (job.prompt.length === 0) throw new PersonaError("E_BAD_INPUT", `request ${i} has an empty prompt`);
    model.validateTokens(job.prompt);
    if (job.forced) model.validateTokens(job.forced);
    const probes = job.probes;
    if (probes) {
      const bad = probes.vectors.length !== probes.layers.length * model.info.nEmbd || probes.layers.some((l) => l < 0 || l > model.info.nLayer);
      if (bad) throw new PersonaError("E_SHAPE", `request ${i}: probes do not fit the model`);
    }
    for (const op of job.ops) {
      if (op.layer < 1 || op.layer > model.info.nLayer || op.vec.length !== model.info.nEmbd) {
        throw new PersonaError("E_SHAPE", `request ${i}: steering does not fit the model`);
      }
    }
  }

  /** Reuses the model's context of the same numerics when it is large enough, else replaces it. */
  private context(modelId: number, shape: ContextShape): NativeContext {
    const entry = this.models.get(modelId)!;
    const existing = entry.contexts.get(shape.exact);
    if (existing) {
      const o = existing.options;
      if (o.nSeqMax >= shape.nSeqMax && o.nCtx >= contextCells(shape) && o.nBatch >= shape.nBatch) return existing;
      existing.free();
      entry.contexts.delete(shape.exact);
    }
    const ctx = this.createContext(modelId, shape);
    entry.contexts.set(shape.exact, ctx);
    return ctx;
  }

  private createContext(modelId: number, shape: ContextShape): NativeContext {
    const entry = this.models.get(modelId)!;
    const ctx = new NativeContext(entry.model, {
      nSeqMax: shape.nSeqMax,
      nCtx: contextCells(shape),
      nBatch: shape.nBatch,
      exact: shape.exact,
      threads: this.threads,
      poll: this.poll,
      evalFilter: this.evalFilter,
      stats: this.evalStats,
    });
    this.contextsCreated.set(modelId, (this.contextsCreated.get(modelId) ?? 0) + 1);
    return ctx;
  }
}

/** KV cells for a shape, rounded up to llama.cpp's padding. */
function contextCells(shape: ContextShape): number {
  const nCtx = Math.ceil((shape.nSeqMax * shape.nCtxPerSeq) / 256) * 256;
  // llama_context_params.n_ctx is a uint32: a larger context would wrap around in the FFI.
  if (nCtx > 0xffffffff) {
    throw new PersonaError("E_BAD_INPUT", `a context of ${nCtx} tokens (prompt + max tokens, × ${shape.nSeqMax} sequences) is beyond llama.cpp's 32-bit size`);
  }
  return nCtx;
}

export type { JobResult };
