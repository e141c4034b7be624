/**
 * Where a decode step's time goes, measured in-process on the engine core (the worker's code,
 * without the worker): native llama_decode, the eval callback's traffic, logits and sampling, and
 * the JS bookkeeping around them. The native classes' methods are wrapped with timers for the
 * duration of the measurement; this is the benchmark's instrument, not the engine's.
 */
import { EngineCore } from "../src/engine/worker/core.js";
import { checkCpuBackend } from "../src/engine/ffi/discover.js";
import { NativeContext } from "../src/engine/native/NativeContext.js";
import { NativeSampler } from "../src/engine/native/NativeSampler.js";
import { resolveSteering, type SteeringOp } from "../src/engine/steering.js";

/** Milliseconds per generation step (one token for every sequence), prompt decodes left out. */
export interface StepBreakdown {
  /** The whole step as the batch loop sees it. */
  step: number;
  /** Inside llama_decode, eval-callback calls included. */
  decode: number;
  /** Reading logits and sampling, all sequences. */
  sample: number;
  /** Batch packing, stop rules, result handling and the yield to the event loop between steps: the rest. */
  js: number;
  /** CPU milliseconds per step (all threads of this process), and inside llama_decode. */
  cpuStep: number;
  cpuDecode: number;
  /** Eval-callback calls per step. */
  callbacks: number;
  /** Generated tokens per second of generation steps alone (llama-batched-bench's TG measure). */
  genTokS: number;
}

/** callback: plain steps with the eval callback installed; steer: one shared vector (llama.cpp's control vector); ablate: steering through the hooks. */
export type Mode = "plain" | "callback" | "captureOne" | "steer" | "ablate";

interface Timers {
  /** Decodes with prompt rows (and the sampling after them), which the step figures leave out. */
  promptMs: number;
  genMs: number;
  genSteps: number;
  sampleMs: number;
  /** Calls into JS from the eval callback (or the eval filter), generation steps. */
  genCallbacks: number;
  /** CPU ms inside generation decodes and inside prompt decodes. */
  genCpu: number;
  promptCpu: number;
  /** Whether the last decode was a generation step. */
  inGen: boolean;
  forceCallback: boolean;
}

const timers: Timers = { promptMs: 0, genMs: 0, genSteps: 0, sampleMs: 0, genCallbacks: 0, genCpu: 0, promptCpu: 0, inGen: false, forceCallback: false };

function instrument(parallelOf: () => number): void {
  type Proto = Record<string, (...a: unknown[]) => unknown>;
  const ctx = NativeContext.prototype as unknown as Proto;
  const decode = ctx.decode!;
  ctx.decode = function (this: NativeContext, ...a: unknown[]) {
    const t0 = performance.now();
    const c0 = this.evalStats.jsCalls;
    const cpu0 = process.cpuUsage();
    try {
      return decode.apply(this, a);
    } finally {
      const dt = performance.now() - t0;
      const cpu = cpuMs(process.cpuUsage(cpu0));
      timers.inGen = (a[0] as { nTokens: number }).nTokens <= parallelOf();
      if (timers.inGen) {
        timers.genMs += dt;
        timers.genCpu += cpu;
        timers.genSteps++;
        timers.genCallbacks += this.evalStats.jsCalls - c0;
      } else {
        timers.promptMs += dt;
        timers.promptCpu += cpu;
      }
    }
  };
  const install = ctx.installHooks!;
  ctx.installHooks = function (this: unknown, on: unknown) {
    return install.call(this, on === true || timers.forceCallback);
  };
  const s = NativeSampler.prototype as unknown as Proto;
  const sample = s.sample!;
  s.sample = function (this: unknown, ...a: unknown[]) {
    const t0 = performance.now();
    try {
      return sample.apply(this, a);
    } finally {
      if (timers.inGen) timers.sampleMs += performance.now() - t0;
      else timers.promptMs += performance.now() - t0;
    }
  };
}

const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

let parallelNow = 1;
let instrumented = false;

export class Breakdown {
  private constructor(
    private readonly core: EngineCore,
    private readonly modelId: number,
    private readonly nLayer: number,
    /** One vector at the middle layer, as the batch part's steering case. */
    private readonly steering: readonly SteeringOp[],
    /** The same vector's direction ablated, which only the hooks can do. */
    private readonly ablation: readonly SteeringOp[],
  ) {}

  /**
   * `cpuBackend`: a CPU backend built by `npm run build:llama`, in place of the prebuilt variants;
   * `evalFilter`: the eval filter library (`npm run build:hooks`), else hooks run in JS.
   */
  static async open(modelPath: string, threads: number, poll: number, opts: { cpuBackend?: string; evalFilter?: string } = {}): Promise<Breakdown> {
    if (!instrumented) {
      instrument(() => parallelNow);
      instrumented = true;
    }
    const evalFilter = opts.evalFilter === undefined ? undefined : { path: opts.evalFilter, required: true };
    const cpuBackend = opts.cpuBackend === undefined ? undefined : checkCpuBackend(opts.cpuBackend);
    const core = new EngineCore({ gpu: "cpu", cpuBackend, verbose: false, threads, poll, evalFilter }, () => {});
    const { id, info } = await core.loadModel(modelPath, {});
    const vector = Float32Array.from({ length: info.nEmbd }, (_, i) => Math.sin(i));
    const layer = Math.floor(info.nLayer / 2);
    return new Breakdown(core, id, info.nLayer, resolveSteering([{ vector, layer, coef: 0.5 }], info), resolveSteering([{ vector, layer, coef: 1, mode: "ablate" }], info));
  }

  tokenize(text: string): Int32Array {
    return this.core.tokenize(this.modelId, text, true, false);
  }

  /** One generation of `tokens` tokens for `parallel` copies of `prompt`, timed by parts. */
  async measure(mode: Mode, prompt: Int32Array, parallel: number, tokens: number): Promise<StepBreakdown> {
    const sampling = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 1, maxTokens: tokens, minTokens: tokens };
    const mid = Math.floor(this.nLayer / 2);
    const jobs = Array.from({ length: parallel }, () => ({
      prompt,
      sampling,
      ops: mode === "steer" ? this.steering : mode === "ablate" ? this.ablation : [],
      capture: mode === "captureOne",
      captureLayers: mode === "captureOne" ? [mid] : undefined,
    }));
    const shape = { nSeqMax: parallel, nCtxPerSeq: prompt.length + tokens + 1, nBatch: Math.max(parallel, 512), exact: false };
    Object.assign(timers, { promptMs: 0, genMs: 0, genSteps: 0, sampleMs: 0, genCallbacks: 0, genCpu: 0, promptCpu: 0, forceCallback: mode === "callback" });
    parallelNow = parallel;
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    // Every sequence decodes its own prompt, as llama-batched-bench's do.
    await this.core.run({ modelId: this.modelId, jobs, shape, sharePrefixes: false }, { onResult() {} });
    const total = performance.now() - t0;
    const cpuTotal = cpuMs(process.cpuUsage(cpu0));
    timers.forceCallback = false;
    const n = timers.genSteps;
    const step = (total - timers.promptMs) / n;
    return {
      step,
      decode: timers.genMs / n,
      sample: timers.sampleMs / n,
      js: step - timers.genMs / n - timers.sampleMs / n,
      cpuStep: (cpuTotal - timers.promptCpu) / n,
      cpuDecode: timers.genCpu / n,
      callbacks: timers.genCallbacks / n,
      genTokS: (parallel * n) / ((total - timers.promptMs) / 1000),
    };
  }

  close(): void {
    this.core.dispose();
  }
}
