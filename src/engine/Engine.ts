/**
 * The entry point: starts the engine worker (which loads llama.cpp) and loads models into it.
 * `await using engine = await Engine.create()` disposes everything it created.
 */
import { existsSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { PersonaError } from "../errors.js";
import { EVAL_FILTER_LIBRARY, LOCAL_CPU_BACKEND, checkCpuBackend, discoverLibraries, isGpuVariant, type GpuChoice } from "./ffi/discover.js";
import type { LoraAdapter } from "./lora.js";
import { Model } from "./Model.js";
import { WorkerHost } from "./worker/host.js";
import type { LoadModelReply } from "./worker/protocol.js";

export interface EngineOptions {
  /** Which llama.cpp build to use; GPU builds are opt-in installs. Defaults to env PERSONA_GPU or "auto". */
  gpu?: GpuChoice;
  /**
   * llama.cpp's CPU backend: the path of one built from the pinned source (`npm run build:llama`),
   * loaded instead of the prebuilt CPU variants (faster batched decoding where the prebuilt
   * compiler's code is slow; CPU build only), or "prebuilt" for those variants. Defaults to env
   * PERSONA_CPU_BACKEND, else the one `npm run build:llama` built in this package when it is there
   * and the CPU build is in use, else the prebuilt variants. One process has one CPU backend:
   * engines asking for another are refused.
   */
  cpuBackend?: string;
  /**
   * CPU threads for decoding. Defaults to env PERSONA_THREADS or the cores not busy with other work
   * (`defaultThreads`); a count above the number of cores is lowered to it, with a warning.
   */
  threads?: number;
  /**
   * How long idle CPU workers spin before sleeping between decodes, 0..100 (ggml's polling level).
   * Defaults to env PERSONA_POLL or DEFAULT_POLL.
   */
  poll?: number;
  /**
   * Answer the scheduler's question about each graph node of a hooked decode (capture, projection,
   * steering through hooks) in C, with the eval filter that `npm ci` / `npm run build:hooks`
   * compiles, instead of with a JS call per node: same results, less CPU per step. true: the
   * filter must load; false: the JS path. Defaults to env PERSONA_NATIVE_HOOKS (1 or 0), else the
   * filter when it is built (a stale one falls back to JS with a warning).
   */
  nativeHooks?: boolean;
  /** Print llama.cpp's log lines. Defaults to false. */
  verbose?: boolean;
  /** Where log lines go when verbose. Defaults to stderr. */
  onLog?: (text: string) => void;
  /** Where warnings go (e.g. a thread count lowered to the core count). Defaults to stderr. */
  onWarning?: (message: string) => void;
}

export interface LoadModelOptions {
  /** Layers offloaded to the GPU (-1 = all). Defaults to all on a GPU build, 0 on CPU. */
  gpuLayers?: number;
  /** Read the weights into memory instead of mapping the file (needed for training). Defaults to false. */
  noMmap?: boolean;
  /** Load only metadata and vocabulary (fast; tokenizer and info only, no inference). Defaults to false. */
  vocabOnly?: boolean;
  /** GGUF LoRA adapters applied to every context, each checked against the model first. Defaults to none. */
  loras?: LoraAdapter[];
}

/**
 * The cores left free by other work (1-minute load average), at least 1. ggml's threads spin at
 * every graph barrier, so one thread whose core is taken stalls all the others: next to a busy
 * process, 2 threads on 2 cores decoded 4-10x slower than 1 thread (`npm run bench:engine`).
 */
export function defaultThreads(cores: number, load: number): number {
  return Math.max(1, Math.min(cores, Math.round(cores - load)));
}

/** Idle workers sleep at once: higher levels were slower idle and busy alike (`npm run bench:engine`). */
export const DEFAULT_POLL = 0;

const GPU_CHOICES: readonly GpuChoice[] = ["auto", "cpu", "cuda", "vulkan", "metal"];

export interface SystemInfo {
  /** The @node-llama-cpp package variant and its folder. */
  variant: string;
  binsDir: string;
  /** The self-built CPU backend, when one is loaded. */
  cpuBackend?: string;
  /** Where hooked decodes answer the scheduler's question about each graph node: in C (the eval filter) or in JS. */
  hooks: "native" | "js";
  /** Why the eval filter is not used although it is built. */
  hooksNote?: string;
  /** So far: decodes that ran hooks (capture, projection, hooked steering) and the calls into JS they made. */
  hookCalls: { decodes: number; jsCalls: number };
  /** llama.cpp's feature line. */
  system: string;
}

/** `cpuBackend` for the prebuilt CPU variants even where `npm run build:llama` has built one. */
export const PREBUILT_CPU_BACKEND = "prebuilt";

/**
 * The CPU backend to load (undefined: the prebuilt variants): a path, "prebuilt", or by default the
 * one `npm run build:llama` built here, when the CPU build is in use (a GPU build comes first).
 */
export function resolveCpuBackend(choice: string | undefined, gpu: GpuChoice, warn: (m: string) => void, local = LOCAL_CPU_BACKEND): string | undefined {
  if (choice === PREBUILT_CPU_BACKEND) return undefined;
  if (choice !== undefined) return checkCpuBackend(choice);
  if (!existsSync(local)) return undefined;
  try {
    if (isGpuVariant(discoverLibraries(gpu).variant)) return undefined;
  } catch {
    return undefined; // no llama.cpp build at all: the worker says so
  }
  try {
    return checkCpuBackend(local);
  } catch (e) {
    warn(`warning: ${(e as Error).message}; using the prebuilt CPU backend`);
    return undefined;
  }
}

/** The eval filter to load: an explicit choice, env PERSONA_NATIVE_HOOKS, else the built one if any. */
export function resolveEvalFilter(option: boolean | undefined, file = EVAL_FILTER_LIBRARY): { path: string; required: boolean } | undefined {
  const env = process.env.PERSONA_NATIVE_HOOKS;
  if (option === undefined && env !== undefined && env !== "" && env !== "0" && env !== "1") {
    throw new PersonaError("E_BAD_INPUT", `PERSONA_NATIVE_HOOKS must be 0 or 1, got ${env}`);
  }
  const want = option ?? (env === "1" ? true : env === "0" ? false : undefined);
  if (want !== undefined && typeof want !== "boolean") throw new PersonaError("E_BAD_INPUT", "nativeHooks must be true or false");
  if (want === false) return undefined;
  if (existsSync(file)) return { path: file, required: want === true };
  if (want) throw new PersonaError("E_NO_LIBRARY", `the eval filter is not built (${file}); npm run build:hooks builds it`);
  return undefined;
}

/**
 * The CPU backend this process loaded ("" for the prebuilt variants). Each engine loads llama.cpp
 * in its own worker thread, but ggml's backend registry is one per process: the first engine's
 * CPU backend is the one every later engine gets.
 */
let processCpuBackend: string | undefined;

export class Engine implements AsyncDisposable {
  private readonly models = new Set<Model>();
  private disposed = false;

  private constructor(
    private readonly host: WorkerHost,
    /** The CPU threads every decode uses, after clamping to the core count. */
    readonly threads: number,
  ) {}

  static async create(options: EngineOptions = {}): Promise<Engine> {
    const gpu = options.gpu ?? ((process.env.PERSONA_GPU as GpuChoice | undefined) || "auto");
    if (!GPU_CHOICES.includes(gpu)) throw new PersonaError("E_BAD_INPUT", `gpu must be one of ${GPU_CHOICES.join(", ")}`);
    const warn = options.onWarning ?? ((m: string) => process.stderr.write(`persona: ${m}\n`));
    const backend = options.cpuBackend ?? (process.env.PERSONA_CPU_BACKEND || undefined);
    if (backend !== undefined && (typeof backend !== "string" || backend === "")) throw new PersonaError("E_BAD_INPUT", "cpuBackend must be a non-empty path or \"prebuilt\"");
    const cpuBackend = resolveCpuBackend(backend, gpu, warn);
    if (processCpuBackend !== undefined && processCpuBackend !== (cpuBackend ?? "")) {
      const name = (b: string) => (b === "" ? "the prebuilt CPU backend" : b);
      throw new PersonaError("E_NATIVE", `this process already uses ${name(processCpuBackend)}; ${name(cpuBackend ?? "")} needs a process of its own`);
    }
    const cores = availableParallelism();
    const requested = options.threads ?? (Number(process.env.PERSONA_THREADS) || defaultThreads(cores, loadavg()[0]!));
    // ggml.h GGML_MAX_N_THREADS; a larger count ended in std::bad_alloc thrown through the C API (abort).
    if (!Number.isInteger(requested) || requested < 1 || requested > 512) {
      throw new PersonaError("E_BAD_INPUT", `threads must be an integer in 1..512, got ${requested}`);
    }
    const threads = Math.min(requested, cores);
    if (threads < requested) {
      // ggml's threads spin at every graph barrier: with more threads than cores each one waits for a
      // descheduled peer (--threads 64 on 2 cores ran for minutes at load average 51).
      warn(`warning: ${requested} threads requested but this machine has ${cores} cores; using ${cores}`);
    }
    const envPoll = process.env.PERSONA_POLL;
    const poll = options.poll ?? (envPoll ? Number(envPoll) : DEFAULT_POLL);
    if (!Number.isInteger(poll) || poll < 0 || poll > 100) throw new PersonaError("E_BAD_INPUT", `poll must be an integer in 0..100, got ${poll}`);
    const evalFilter = resolveEvalFilter(options.nativeHooks);
    const onLog = options.onLog ?? ((t: string) => process.stderr.write(t));
    // Recorded before the worker loads anything: ggml's backend registry is filled inside the load,
    // before steps that can still fail, and a concurrent create must see the choice too.
    processCpuBackend = cpuBackend ?? "";
    const host = new WorkerHost({ gpu, cpuBackend, verbose: options.verbose ?? false, threads, poll, evalFilter }, onLog);
    const engine = new Engine(host, threads);
    try {
      const info = await engine.systemInfo(); // surfaces a missing library now, not at the first model
      if (info.hooksNote) warn(`warning: ${info.hooksNote}; hooked decode steps take the JS path`);
    } catch (e) {
      await host.close();
      throw e;
    }
    return engine;
  }

  /** The llama.cpp build in use and how hooked decodes run (see SystemInfo). */
  systemInfo(): Promise<SystemInfo> {
    return this.host.call({ op: "systemInfo" });
  }

  async loadModel(path: string, options: LoadModelOptions = {}): Promise<Model> {
    if (this.disposed) throw new PersonaError("E_DISPOSED", "engine disposed");
    if (typeof path !== "string" || path === "") throw new PersonaError("E_BAD_INPUT", "model path must be a non-empty string");
    const reply = await this.host.call<LoadModelReply>({ op: "loadModel", path, ...options });
    const model = new Model(this.host, reply.id, reply.info, (m) => this.models.delete(m));
    this.models.add(model);
    return model;
  }

  /** Frees every model and stops the worker. Idempotent. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await Promise.all([...this.models].map((m) => m.dispose()));
    await this.host.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}
