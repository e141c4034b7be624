/**
 * Full-weight training of a loaded F32 llama model in the engine worker: our own ggml graph
 * (train/graph.ts) over the model's weight tensors, optimised by ggml's AdamW (ggml_opt). The
 * weights change in place, so inference contexts on the same model see them at once and `save`
 * writes them.
 *
 * One step = `batchWindows` windows, one AdamW update; the graph is rebuilt per step
 * (ggml_opt's dynamic mode), which keeps it independent of the model's depth.
 */
import { stat } from "node:fs/promises";
import { PersonaError } from "../../errors.js";
import {
  addressOf,
  callSetNThreads,
  GGML_BACKEND_DEVICE_TYPE_CPU,
  GGML_OPT_BUILD_TYPE_OPT,
  GGML_OPT_CONTEXT,
  GGML_OPT_LOSS_TYPE_CROSS_ENTROPY,
  GGML_OPT_OPTIMIZER_TYPE_ADAMW,
  GGML_OPT_OPTIMIZER_TYPE_SGD,
  GGML_TENSOR,
  GGML_TENSOR_FLAGS_OFFSET,
  GGML_TENSOR_FLAG_PARAM,
  GGML_TYPE_F32,
  isNull,
  readCString,
  readInt32,
  readInt64,
  readPointer,
  registerEvalCallback,
  registerOptParsCallback,
  unregisterCallback,
  writeInt32,
  writeInt64,
  type BackendHandle,
  type BufferHandle,
  type LlamaApi,
  type CallbackHandle,
  type GgmlContextHandle,
  type GgmlOptParams,
  type OptContextHandle,
  type OptimizerParams,
  type OptResultHandle,
  type SchedHandle,
  type TensorHandle,
} from "../ffi/llama.js";
import { Batch } from "../native/Batch.js";
import type { NativeModel } from "../native/NativeModel.js";
import { type CheckpointState, readCheckpoint, trainFingerprint, writeCheckpoint } from "./checkpoint.js";
import { buildLlamaGraph, documentLayout, type GraphLora, graphSize, llamaTensorNames, type LlamaHParams } from "./graph.js";
import { learningRateAt, seededRandom, shuffled, validateSpec, type TrainProgress, type TrainResult, type TrainSpec } from "./options.js";

export interface TrainHooks {
  onProgress?(p: TrainProgress): void;
  shouldAbort?(): boolean;
}

/** `ggml_tensor.src[]`: 10 pointers after `flags`. */
const TENSOR_SRC_OFFSET = GGML_TENSOR_FLAGS_OFFSET + 4;
const TENSOR_MAX_SRC = 10;

/**
 * The model's weight tensors by name. llama.cpp has no lookup by name, so one token is decoded
 * with an eval callback that reads the weights off the sources of the graph's nodes.
 */
function weightTensors(model: NativeModel, names: ReadonlySet<string>): Map<string, TensorHandle> {
  const { api } = model;
  const found = new Map<string, TensorHandle>();
  const cb = registerEvalCallback((t, ask) => {
    if (ask) {
      for (let j = 0; j < TENSOR_MAX_SRC; j++) {
        const src = readPointer<TensorHandle>(t, TENSOR_SRC_OFFSET + 8 * j);
        if (isNull(src)) continue;
        const name = readCString(src, GGML_TENSOR.name, GGML_TENSOR.nameLength);
        if (names.has(name)) found.set(name, src);
      }
    }
    return false; // observe nothing: no graph splits
  });
  const params = api.llama_context_default_params();
  params.n_ctx = 256;
  params.n_batch = 1;
  params.n_ubatch = 1;
  params.n_seq_max = 1;
  params.no_perf = true;
  params.cb_eval = cb;
  params.cb_eval_user_data = null;
  const ctx = api.llama_init_from_model(model.handle, params);
  const batch = new Batch(api, 1);
  try {
    if (isNull(ctx)) throw new PersonaError("E_NATIVE", `llama.cpp could not create a context to find the weights${model.lastErrors()}`);
    batch.add(0, 0, 0, true);
    const rc = api.llama_decode(ctx, batch.toNative());
    if (rc !== 0) throw new PersonaError("E_NATIVE", `llama_decode failed while looking up the weights (code ${rc})${model.lastErrors()}`);
    return found;
  } finally {
    batch.free();
    if (!isNull(ctx)) api.llama_free(ctx);
    unregisterCallback(cb);
  }
}

/**
 * Sets a fresh optimiser context's AdamW step, after checking that the private struct looks as
 * GGML_OPT_CONTEXT says (empty vectors, step 1, period 1): a layout that does not match is an
 * error, never a write to the wrong place.
 */
function setOptimiserStep(opt: OptContextHandle, iter: number): void {
  const o = GGML_OPT_CONTEXT;
  let empty = true;
  for (let off = o.vectors; off < o.vectors + o.vectorsBytes; off += 8) empty &&= readInt64(opt, off) === 0;
  if (!empty || readInt64(opt, o.iter) !== 1 || readInt32(opt, o.optPeriod) !== 1) {
    throw new PersonaError("E_NATIVE", "this build of ggml lays out its optimiser state differently; a checkpoint cannot be resumed with it");
  }
  writeInt64(opt, o.iter, iter);
}

/** A checkpoint's tensors must be exactly the ones this run trains, with the same sizes. */
function checkResumed(c: CheckpointState, sizes: Map<string, number>, totalSteps: number, file: string): void {
  const bad = (why: string) => new PersonaError("E_CONFIG_MISMATCH", `checkpoint ${file} does not fit this run (${why}); delete it to start over`);
  if (!Number.isInteger(c.step) || c.step < 0 || c.step > totalSteps) throw bad(`step ${c.step} of ${totalSteps}`);
  if (c.tensors.size !== sizes.size) throw bad(`${c.tensors.size} tensors, this run trains ${sizes.size}`);
  for (const [name, t] of c.tensors) {
    const n = sizes.get(name);
    if (n === undefined || t.value.length !== n || (t.m && t.m.length !== n) || (t.v && t.v.length !== n)) throw bad(`tensor ${name}`);
  }
}

/** `n` floats of a backend tensor. */
function readTensor(api: LlamaApi, t: TensorHandle, n: number): Float32Array {
  const data = new Float32Array(n);
  api.ggml_backend_tensor_get(t, data, 0, data.byteLength);
  return data;
}

const elements = (t: TensorHandle) => [0, 1, 2, 3].reduce((p, d) => p * tensorDim(t, d), 1);
const tensorDim = (t: TensorHandle, d: number) => readInt64(t, GGML_TENSOR.ne + 8 * d);

/**
 * What a run trains: the selected weights (full training), or the LoRA pair of each adapted
 * weight (`<weight>.lora_a` / `.lora_b`), with the number of trained parameters.
 */
function selectTrained(spec: TrainSpec, hp: LlamaHParams, weights: ReadonlyMap<string, TensorHandle>) {
  const wanted = spec.trainable ? new Set(spec.trainable) : null;
  const trained: string[] = [];
  let trainableParams = 0;
  for (const name of spec.lora ? [] : llamaTensorNames(hp.nLayer, hp.arch)) {
    const t = weights.get(name);
    if (t === undefined || (wanted !== null && !wanted.has(name))) continue;
    trained.push(name);
    trainableParams += elements(t);
  }
  // The adapted weights: every layer's targets (ggml order: W is [nIn, nOut]).
  const adapted = spec.lora
    ? Array.from({ length: hp.nLayer }, (_, l) => spec.lora!.targets.map((t) => `blk.${l}.${t}.weight`)).flat().filter((n) => weights.has(n))
    : [];
  for (const n of adapted) {
    trained.push(`${n}.lora_a`, `${n}.lora_b`);
    trainableParams += spec.lora!.rank * (tensorDim(weights.get(n)!, 0) + tensorDim(weights.get(n)!, 1));
  }
  // ggml's backward pass aborts the process when the graph has no trainable tensor.
  if (trained.length === 0) throw new PersonaError("E_BAD_INPUT", "no trainable tensor: `trainable` selects none of the model's weights");
  return { trained, adapted, trainableParams };
}

/**
 * The adapter's tensors in a buffer of their own on the training backend: A ~ U(±1/√nIn) from
 * the run's seed, B = 0. The caller frees `ctx` and `buf`.
 */
function allocateLora(
  api: LlamaApi,
  backend: BackendHandle,
  weights: ReadonlyMap<string, TensorHandle>,
  adapted: readonly string[],
  lora: NonNullable<TrainSpec["lora"]>,
  seed: number,
): { ctx: GgmlContextHandle; buf: BufferHandle; tensors: Map<string, GraphLora> } {
  const ctx = api.ggml_init({ mem_size: (2 * adapted.length + 1) * api.ggml_tensor_overhead(), mem_buffer: null, no_alloc: true });
  if (isNull(ctx)) throw new PersonaError("E_NATIVE", "ggml_init failed for the LoRA tensors");
  const r = lora.rank;
  const tensors = new Map<string, GraphLora>();
  for (const n of adapted) {
    const w = weights.get(n)!;
    tensors.set(n, { a: api.ggml_new_tensor_4d(ctx, GGML_TYPE_F32, tensorDim(w, 0), r, 1, 1), b: api.ggml_new_tensor_4d(ctx, GGML_TYPE_F32, r, tensorDim(w, 1), 1, 1), scale: lora.scale });
  }
  const buf = api.ggml_backend_alloc_ctx_tensors(ctx, backend);
  if (isNull(buf)) {
    api.ggml_free(ctx);
    throw new PersonaError("E_NATIVE", "could not allocate the LoRA tensors");
  }
  const rand = seededRandom(seed ^ 0x5eed);
  for (const [n, { a, b }] of tensors) {
    const nIn = tensorDim(weights.get(n)!, 0);
    const bound = 1 / Math.sqrt(nIn);
    const init = Float32Array.from({ length: nIn * r }, () => (2 * rand() - 1) * bound);
    api.ggml_backend_tensor_set(a, init, 0, init.byteLength);
    const zeros = new Float32Array(r * tensorDim(weights.get(n)!, 1));
    api.ggml_backend_tensor_set(b, zeros, 0, zeros.byteLength);
  }
  return { ctx, buf, tensors };
}

/** A trained adapter's matrices, read back for the result. */
function readLora(api: LlamaApi, lora: ReadonlyMap<string, GraphLora>, weights: ReadonlyMap<string, TensorHandle>, r: number) {
  return [...lora].map(([name, { a, b }]) => {
    const [nIn, nOut] = [tensorDim(weights.get(name)!, 0), tensorDim(weights.get(name)!, 1)];
    return { name, nIn, nOut, a: readTensor(api, a, nIn * r), b: readTensor(api, b, r * nOut) };
  });
}

/**
 * AdamW's moments live inside ggml_opt; the first step's graph names their tensors (the sources
 * of each "adamw step for W" node). The returned eval callback fills `moments` as those nodes are
 * scheduled, before they run, and loads a resumed run's saved moments in time. The caller installs
 * it for the first step only and unregisters it.
 */
function watchAdamMoments(
  api: LlamaApi,
  trained: ReadonlyMap<string, TensorHandle>,
  resumed: CheckpointState | null,
  moments: Map<string, { m: TensorHandle; v: TensorHandle }>,
): CallbackHandle {
  const byAddress = new Map([...trained].map(([n, t]) => [addressOf(t), n]));
  return registerEvalCallback((t, ask) => {
    if (ask && readCString(t, GGML_TENSOR.name, GGML_TENSOR.nameLength).startsWith("adamw step for ")) {
      const name = byAddress.get(addressOf(readPointer<TensorHandle>(t, TENSOR_SRC_OFFSET)!));
      const m = readPointer<TensorHandle>(t, TENSOR_SRC_OFFSET + 16);
      const v = readPointer<TensorHandle>(t, TENSOR_SRC_OFFSET + 24);
      if (name !== undefined && m && v) {
        moments.set(name, { m, v });
        const saved = resumed?.tensors.get(name);
        if (saved?.m && saved.v) {
          api.ggml_backend_tensor_set(m, saved.m, 0, saved.m.byteLength);
          api.ggml_backend_tensor_set(v, saved.v, 0, saved.v.byteLength);
        }
      }
    }
    return false;
  });
}

interface BatchRunnerEnv {
  api: LlamaApi;
  opt: OptContextHandle;
  result: OptResultHandle;
  weights: ReadonlyMap<string, TensorHandle>;
  hp: LlamaHParams;
  spec: TrainSpec;
  /** Graph size in nodes. */
  graphNodes: number;
  lora: ReadonlyMap<string, GraphLora>;
}

/**
 * Runs one forward (and, when training, backward + optimiser step) over a batch of windows and
 * returns their mean loss and the number of scored targets: the training graph is rebuilt per
 * batch (ggml_opt's dynamic mode).
 */
function batchRunner({ api, opt, result, weights, hp, spec, graphNodes, lora }: BatchRunnerEnv) {
  const W = spec.contextLength;
  const ctxBytes = graphNodes * 4 * api.ggml_tensor_overhead() + 4 * api.ggml_graph_overhead_custom(graphNodes, true);
  const lossOut = new Float64Array(1);
  const uncOut = new Float64Array(1);
  const windowOf = (w: number) => spec.tokens.subarray(spec.starts[w]!, spec.starts[w]! + W + 1);
  // One-hot next-token labels [nVocab, W·B] (15 MB for the demo): allocated once, and only the
  // ones written are cleared after each step.
  const labels = new Float32Array(hp.nVocab * W * spec.batchWindows);
  return (ids: ArrayLike<number>, train: boolean): { loss: number; scored: number } => {
    const wins = Array.from(ids, windowOf);
    const n = wins.length;
    // Rows b·W + i whose target (token i + 1 of window b) is scored; null = all of them.
    let rows: Int32Array | null = null;
    if (spec.labelMask) {
      const picked: number[] = [];
      Array.from(ids).forEach((w, b) => {
        for (let i = 0; i < W; i++) if (spec.labelMask![spec.starts[w]! + i + 1] === 1) picked.push(b * W + i);
      });
      rows = Int32Array.from(picked);
    }
    const nRows = rows ? rows.length : W * n;
    const ctx = api.ggml_init({ mem_size: ctxBytes, mem_buffer: null, no_alloc: true });
    if (isNull(ctx)) throw new PersonaError("E_NATIVE", "ggml_init failed for the training graph");
    try {
      const { inputs, logits } = buildLlamaGraph(api, ctx, weights, hp, W, n, spec.steering, rows ? rows.length : null, lora);
      const gf = api.ggml_new_graph_custom(ctx, graphNodes, true);
      api.ggml_build_forward_expand(gf, logits);
      api.ggml_opt_prepare_alloc(opt, ctx, gf, inputs.tokens, logits);
      api.ggml_opt_alloc(opt, train);
      // ggml_opt only clears its gradient accumulators between steps when opt_period > 1:
      // without this, every step would apply the sum of all gradients so far.
      if (train) api.ggml_opt_reset(opt, false);
      const tokens = new Int32Array(W * n);
      wins.forEach((w, b) => tokens.set(w.subarray(0, W), b * W));
      const startFlags = spec.documentStarts ? Array.from(ids, (w) => spec.documentStarts!.subarray(spec.starts[w]!, spec.starts[w]! + W)) : null;
      const { positions, mask } = documentLayout(wins, W, spec.documentStart < 0 ? null : spec.documentStart, startFlags);
      api.ggml_backend_tensor_set(inputs.tokens, tokens, 0, tokens.byteLength);
      api.ggml_backend_tensor_set(inputs.positions, positions, 0, positions.byteLength);
      api.ggml_backend_tensor_set(inputs.mask, mask, 0, mask.byteLength);
      spec.steering.forEach((op, i) => api.ggml_backend_tensor_set(inputs.steer[i]!, op.vec, 0, op.vec.byteLength));
      if (rows && inputs.rows) api.ggml_backend_tensor_set(inputs.rows, rows, 0, rows.byteLength);
      if (inputs.lastPrompt) {
        // A last prompt token is context whose next token is scored (a reply's first), as inference classes it.
        const flags = new Float32Array(W * n);
        const lm = spec.labelMask;
        if (lm) Array.from(ids).forEach((w, b) => {
          const s = spec.starts[w]!;
          for (let i = 0; i < W; i++) if (lm[s + i] === 0 && lm[s + i + 1] === 1) flags[b * W + i] = 1;
        });
        api.ggml_backend_tensor_set(inputs.lastPrompt, flags, 0, flags.byteLength);
      }
      const target = (r: number) => wins[Math.floor(r / W)]![(r % W) + 1]!;
      const hot = (k: number) => k * hp.nVocab + target(rows ? rows[k]! : k);
      for (let k = 0; k < nRows; k++) labels[hot(k)] = 1;
      const used = labels.subarray(0, hp.nVocab * nRows);
      api.ggml_backend_tensor_set(api.ggml_opt_labels(opt), used, 0, used.byteLength);
      for (let k = 0; k < nRows; k++) labels[hot(k)] = 0;
      api.ggml_opt_result_reset(result);
      api.ggml_opt_eval(opt, result);
      api.ggml_opt_result_loss(result, lossOut, uncOut);
    } finally {
      api.ggml_free(ctx);
    }
    return { loss: lossOut[0]!, scored: nRows };
  };
}

/**
 * The run's checkpoint: read back when resuming (it must be of this data and these settings), and
 * otherwise never overwritten while it holds an unfinished run.
 */
async function openCheckpoint(spec: TrainSpec, hp: LlamaHParams): Promise<{ fingerprint: string; resumed: CheckpointState | null }> {
  const ck = spec.checkpoint;
  if (!ck) return { fingerprint: "", resumed: null };
  const fingerprint = trainFingerprint(spec, hp);
  if (ck.resume) return { fingerprint, resumed: await readCheckpoint(ck.path, fingerprint) };
  if (await stat(ck.path).catch(() => undefined)) {
    throw new PersonaError("E_BAD_INPUT", `${ck.path} holds the checkpoint of an unfinished run: resume it (persona finetune --resume), or delete it to start over`);
  }
  return { fingerprint, resumed: null };
}

/** ggml_opt in its dynamic mode (the graph is built per batch), cross-entropy loss, one step per batch. */
function createOptimiser(api: LlamaApi, scheduler: SchedHandle, optPars: CallbackHandle, optimizer: TrainSpec["optimizer"]): OptContextHandle {
  const params: GgmlOptParams = {
    backend_sched: scheduler,
    ctx_compute: null,
    inputs: null,
    outputs: null,
    loss_type: GGML_OPT_LOSS_TYPE_CROSS_ENTROPY,
    build_type: GGML_OPT_BUILD_TYPE_OPT,
    opt_period: 1,
    get_opt_pars: optPars,
    get_opt_pars_ud: null,
    optimizer: optimizer === "sgd" ? GGML_OPT_OPTIMIZER_TYPE_SGD : GGML_OPT_OPTIMIZER_TYPE_ADAMW,
  };
  const opt = api.ggml_opt_init(params);
  if (isNull(opt)) throw new PersonaError("E_NATIVE", "ggml_opt_init failed");
  return opt;
}

export async function trainModel(model: NativeModel, spec: TrainSpec, hp: LlamaHParams, threads: number, hooks: TrainHooks): Promise<TrainResult> {
  validateSpec(spec, model.info);
  const ck = spec.checkpoint;
  const { fingerprint, resumed } = await openCheckpoint(spec, hp);
  const { api } = model;
  const W = spec.contextLength;
  const B = spec.batchWindows;
  const nTrain = spec.starts.length - spec.valCount;
  const stepsPerEpoch = Math.floor(nTrain / B);
  const totalSteps = stepsPerEpoch * spec.epochs;

  const weights = weightTensors(model, new Set(llamaTensorNames(hp.nLayer, hp.arch)));
  const { trained, adapted, trainableParams } = selectTrained(spec, hp, weights);

  let step = resumed?.step ?? 0;
  let lr = learningRateAt(spec, step, totalSteps);
  const optPars = registerOptParsCallback(
    (): OptimizerParams => ({
      adamw: { alpha: lr, beta1: spec.beta1, beta2: spec.beta2, eps: spec.eps, wd: spec.weightDecay },
      sgd: { alpha: lr, wd: spec.weightDecay },
    }),
  );
  const device = api.ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  const backend = isNull(device) ? null : api.ggml_backend_dev_init(device, null);
  let sched: SchedHandle | null = null;
  let opt: OptContextHandle | null = null;
  let loraCtx: GgmlContextHandle | null = null;
  let loraBuf: BufferHandle | null = null;
  let momentsCb: CallbackHandle | null = null;
  const lora = new Map<string, GraphLora>();
  const result = api.ggml_opt_result_init();
  try {
    if (isNull(device) || isNull(backend)) throw new PersonaError("E_NATIVE", "ggml has no CPU backend to train on");
    if (spec.lora) {
      const alloc = allocateLora(api, backend, weights, adapted, spec.lora, spec.seed);
      [loraCtx, loraBuf] = [alloc.ctx, alloc.buf];
      for (const [n, t] of alloc.tensors) lora.set(n, t);
    }
    // Every trained tensor by its name (weights, or `<weight>.lora_a` / `.lora_b`) with its size.
    const trainedTensors = new Map<string, TensorHandle>();
    for (const n of trained) {
      const ab = /^(.*)\.lora_(a|b)$/.exec(n);
      trainedTensors.set(n, ab ? lora.get(ab[1]!)![ab[2] as "a" | "b"] : weights.get(n)!);
    }
    const sizes = new Map([...trainedTensors].map(([n, t]) => [n, elements(t)]));
    if (resumed) {
      checkResumed(resumed, sizes, totalSteps, ck!.path);
      for (const [n, t] of resumed.tensors) api.ggml_backend_tensor_set(trainedTensors.get(n)!, t.value, 0, t.value.byteLength);
    }
    const setThreads = api.ggml_backend_reg_get_proc_address(api.ggml_backend_dev_backend_reg(device), "ggml_backend_set_n_threads");
    if (!isNull(setThreads)) callSetNThreads(setThreads, backend, threads);
    const size = graphSize(hp.nLayer, spec.steering.length);
    const scheduler = api.ggml_backend_sched_new([backend], null, 1, size, false, false);
    sched = scheduler;
    const optCtx = createOptimiser(api, scheduler, optPars, spec.optimizer);
    opt = optCtx;
    if (resumed && resumed.step > 0) setOptimiserStep(optCtx, resumed.step + 1);
    const moments = new Map<string, { m: TensorHandle; v: TensorHandle }>();
    if (ck && spec.optimizer === "adamw") {
      momentsCb = watchAdamMoments(api, trainedTensors, resumed, moments);
      api.ggml_backend_sched_set_eval_callback(scheduler, momentsCb, null);
    }
    if (spec.lora) {
      for (const { a, b } of lora.values()) {
        api.ggml_set_param(a);
        api.ggml_set_param(b);
      }
    } else for (const name of trained) api.ggml_set_param(weights.get(name)!);

    const runBatch = batchRunner({ api, opt: optCtx, result, weights, hp, spec, graphNodes: size, lora });
    /** One forward (and, when training, backward + optimiser step) over the given windows; their mean loss. */
    const evalWindows = (ids: ArrayLike<number>, train: boolean) => {
      const r = runBatch(ids, train);
      if (!Number.isFinite(r.loss)) {
        throw new PersonaError("E_NATIVE", `the loss became ${r.loss} at step ${step} (learning rate ${lr.toExponential(2)} too high?)`);
      }
      return r;
    };

    const startStep = step;
    const losses = [...(resumed?.losses ?? [])];
    const valLosses = [...(resumed?.valLosses ?? [])];
    let epochSum = resumed?.epochLossSum ?? 0;
    const t0 = performance.now();
    const elapsed = () => (resumed?.seconds ?? 0) + (performance.now() - t0) / 1000;
    const tokensPerSecond = () => ((step - startStep) * B * W) / Math.max(1e-9, (performance.now() - t0) / 1000);
    // What the last checkpoint holds (a resumed run starts with it).
    let saved = { step, epochs: losses.length };
    const checkpoint = async () => {
      if (!ck || (saved.step === step && saved.epochs === losses.length)) return;
      const tensors = new Map(
        [...trainedTensors].map(([n, t]) => {
          const size = sizes.get(n)!;
          const mv = moments.get(n);
          return [n, mv ? { value: readTensor(api, t, size), m: readTensor(api, mv.m, size), v: readTensor(api, mv.v, size) } : { value: readTensor(api, t, size) }];
        }),
      );
      await writeCheckpoint(ck.path, fingerprint, { step, epochLossSum: epochSum, losses, valLosses, seconds: elapsed(), tensors });
      saved = { step, epochs: losses.length };
    };
    const cancelled = async () => {
      await checkpoint();
      return new PersonaError("E_ABORTED", `training cancelled after ${step} of ${totalSteps} steps${ck ? `; ${ck.path} holds the checkpoint to resume from` : ""}`);
    };
    for (let epoch = losses.length + 1; epoch <= spec.epochs; epoch++) {
      const order = shuffled(nTrain, spec.seed + epoch - 1);
      for (let i = step - (epoch - 1) * stepsPerEpoch; i < stepsPerEpoch; i++) {
        if (hooks.shouldAbort?.()) throw await cancelled();
        lr = learningRateAt(spec, step, totalSteps);
        epochSum += evalWindows(order.subarray(i * B, (i + 1) * B), true).loss;
        step++;
        if (momentsCb && step === startStep + 1) {
          api.ggml_backend_sched_set_eval_callback(scheduler, null, null);
          if (moments.size !== trainedTensors.size) throw new PersonaError("E_INTERNAL", `found the AdamW state of ${moments.size} of ${trainedTensors.size} trained tensors`);
        }
        hooks.onProgress?.({
          epoch,
          epochs: spec.epochs,
          step,
          steps: totalSteps,
          loss: epochSum / (i + 1),
          learningRate: lr,
          tokensPerSecond: tokensPerSecond(),
          epochDone: false,
        });
        if (ck && step % ck.everySteps === 0) await checkpoint();
      }
      const trainLoss = epochSum / stepsPerEpoch;
      let valLoss: number | undefined;
      if (spec.valCount > 0) {
        // Token-weighted, so that it is the mean loss over every scored validation token.
        let v = 0;
        let scored = 0;
        for (let w = nTrain; w < spec.starts.length; w++) {
          if (hooks.shouldAbort?.()) throw await cancelled();
          const r = evalWindows([w], false);
          v += r.loss * r.scored;
          scored += r.scored;
        }
        valLoss = v / scored;
        valLosses.push(valLoss);
      }
      losses.push(trainLoss);
      epochSum = 0;
      const p: TrainProgress = {
        epoch,
        epochs: spec.epochs,
        step,
        steps: totalSteps,
        loss: trainLoss,
        learningRate: lr,
        tokensPerSecond: tokensPerSecond(),
        epochDone: true,
      };
      if (valLoss !== undefined) p.valLoss = valLoss;
      hooks.onProgress?.(p);
    }
    const seconds = elapsed();
    const out: TrainResult = {
      losses,
      steps: step,
      tokens: step * B * W,
      seconds,
      tokensPerSecond: (step * B * W) / Math.max(1e-9, seconds),
      trainableTensors: trained,
      trainableParams,
    };
    if (spec.valCount > 0) out.valLosses = valLosses;
    if (resumed) out.resumedFromStep = resumed.step;
    if (spec.lora) out.lora = { rank: spec.lora.rank, scale: spec.lora.scale, tensors: readLora(api, lora, weights, spec.lora.rank) };
    return out;
  } finally {
    api.ggml_opt_result_free(result);
    if (!isNull(opt)) api.ggml_opt_free(opt);
    if (!isNull(sched)) api.ggml_backend_sched_free(sched);
    if (loraBuf !== null) api.ggml_backend_buffer_free(loraBuf);
    if (loraCtx !== null) api.ggml_free(loraCtx);
    if (!isNull(backend)) api.ggml_backend_free(backend);
    unregisterCallback(optPars);
    if (momentsCb !== null) unregisterCallback(momentsCb);
    // The trainable mark stays on a tensor for good; clear it so that inference graphs treat the
    // weights as plain weights again and a later run with a narrower `trainable` is honoured.
    for (const t of weights.values()) {
      const flags = readInt32(t, GGML_TENSOR_FLAGS_OFFSET);
      if (flags & GGML_TENSOR_FLAG_PARAM) writeInt32(t, GGML_TENSOR_FLAGS_OFFSET, flags & ~GGML_TENSOR_FLAG_PARAM);
    }
  }
}
