/**
 * Full-weight training of a loaded F32 llama model in the engine worker: our own ggml graph
 * (train/graph.ts) over the model's weight tensors, optimised by ggml's AdamW (ggml_opt). The
 * weights change in place, so inference contexts on the same model see them at once and `save`
 * writes them.
 *
 * One step = `batchWindows` windows, one AdamW update; the graph is rebuilt per step
 * (ggml_opt's dynamic mode), which keeps it independent of the model's depth.
 */
import { PersonaError } from "../../errors.js";
import {
  callSetNThreads,
  GGML_BACKEND_DEVICE_TYPE_CPU,
  GGML_OPT_BUILD_TYPE_OPT,
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
  type BufferHandle,
  type GgmlContextHandle,
  type GgmlOptParams,
  type OptContextHandle,
  type OptimizerParams,
  type SchedHandle,
  type TensorHandle,
} from "../ffi/llama.js";
import { Batch } from "../native/Batch.js";
import type { NativeModel } from "../native/NativeModel.js";
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

export function trainModel(model: NativeModel, spec: TrainSpec, hp: LlamaHParams, threads: number, hooks: TrainHooks): TrainResult {
  validateSpec(spec, model.info, hp);
  const { api } = model;
  const W = spec.contextLength;
  const B = spec.batchWindows;
  const nTrain = spec.starts.length - spec.valCount;
  const stepsPerEpoch = Math.floor(nTrain / B);
  const totalSteps = stepsPerEpoch * spec.epochs;

  const weights = weightTensors(model, new Set(llamaTensorNames(hp.nLayer, hp.arch)));
  const ne = (t: TensorHandle, d: number) => readInt64(t, GGML_TENSOR.ne + 8 * d);
  const wanted = spec.trainable ? new Set(spec.trainable) : null;
  const trained: string[] = [];
  let trainableParams = 0;
  for (const name of spec.lora ? [] : llamaTensorNames(hp.nLayer, hp.arch)) {
    const t = weights.get(name);
    if (t === undefined || (wanted !== null && !wanted.has(name))) continue;
    trained.push(name);
    trainableParams += ne(t, 0) * ne(t, 1) * ne(t, 2) * ne(t, 3);
  }
  // The adapted weights: every layer's targets (ggml order: W is [nIn, nOut]).
  const adapted = spec.lora
    ? Array.from({ length: hp.nLayer }, (_, l) => spec.lora!.targets.map((t) => `blk.${l}.${t}.weight`)).flat().filter((n) => weights.has(n))
    : [];
  if (spec.lora) {
    for (const n of adapted) {
      trained.push(`${n}.lora_a`, `${n}.lora_b`);
      trainableParams += spec.lora.rank * (ne(weights.get(n)!, 0) + ne(weights.get(n)!, 1));
    }
  }
  // ggml's backward pass aborts the process when the graph has no trainable tensor.
  if (trained.length === 0) throw new PersonaError("E_BAD_INPUT", "no trainable tensor: `trainable` selects none of the model's weights");

  let step = 0;
  let lr = learningRateAt(spec, 0, totalSteps);
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
  const lora = new Map<string, GraphLora>();
  const result = api.ggml_opt_result_init();
  try {
    if (isNull(device) || isNull(backend)) throw new PersonaError("E_NATIVE", "ggml has no CPU backend to train on");
    if (spec.lora) {
      // The adapter lives in a buffer of its own on the training backend; A ~ U(±1/√nIn), B = 0.
      const ctx = api.ggml_init({ mem_size: (2 * adapted.length + 1) * api.ggml_tensor_overhead(), mem_buffer: null, no_alloc: true });
      if (isNull(ctx)) throw new PersonaError("E_NATIVE", "ggml_init failed for the LoRA tensors");
      loraCtx = ctx;
      const r = spec.lora.rank;
      for (const n of adapted) {
        const w = weights.get(n)!;
        lora.set(n, { a: api.ggml_new_tensor_4d(ctx, GGML_TYPE_F32, ne(w, 0), r, 1, 1), b: api.ggml_new_tensor_4d(ctx, GGML_TYPE_F32, r, ne(w, 1), 1, 1), scale: spec.lora.scale });
      }
      const buf = api.ggml_backend_alloc_ctx_tensors(ctx, backend);
      if (isNull(buf)) throw new PersonaError("E_NATIVE", "could not allocate the LoRA tensors");
      loraBuf = buf;
      const rand = seededRandom(spec.seed ^ 0x5eed);
      for (const [n, { a, b }] of lora) {
        const nIn = ne(weights.get(n)!, 0);
        const bound = 1 / Math.sqrt(nIn);
        const init = Float32Array.from({ length: nIn * r }, () => (2 * rand() - 1) * bound);
        api.ggml_backend_tensor_set(a, init, 0, init.byteLength);
        const zeros = new Float32Array(r * ne(weights.get(n)!, 1));
        api.ggml_backend_tensor_set(b, zeros, 0, zeros.byteLength);
      }
    }
    const setThreads = api.ggml_backend_reg_get_proc_address(api.ggml_backend_dev_backend_reg(device), "ggml_backend_set_n_threads");
    if (!isNull(setThreads)) callSetNThreads(setThreads, backend, threads);
    const size = graphSize(hp.nLayer);
    const scheduler = api.ggml_backend_sched_new([backend], null, 1, size, false, false);
    sched = scheduler;
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
      optimizer: spec.optimizer === "sgd" ? GGML_OPT_OPTIMIZER_TYPE_SGD : GGML_OPT_OPTIMIZER_TYPE_ADAMW,
    };
    const optCtx = api.ggml_opt_init(params);
    if (isNull(optCtx)) throw new PersonaError("E_NATIVE", "ggml_opt_init failed");
    opt = optCtx;
    if (spec.lora) {
      for (const { a, b } of lora.values()) {
        api.ggml_set_param(a);
        api.ggml_set_param(b);
      }
    } else for (const name of trained) api.ggml_set_param(weights.get(name)!);

    const ctxBytes = size * 4 * api.ggml_tensor_overhead() + 4 * api.ggml_graph_overhead_custom(size, true);
    const lossOut = new Float64Array(1);
    const uncOut = new Float64Array(1);
    const windowOf = (w: number) => spec.tokens.subarray(spec.starts[w]!, spec.starts[w]! + W + 1);
    // One-hot next-token labels [nVocab, W·B] (15 MB for the demo): allocated once, and only the
    // ones written are cleared after each step.
    const labels = new Float32Array(hp.nVocab * W * B);

    /** One forward (and, when training, backward + AdamW step) over the given windows; their mean loss. */
    const runBatch = (ids: ArrayLike<number>, train: boolean): { loss: number; scored: number } => {
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
        const gf = api.ggml_new_graph_custom(ctx, size, true);
        api.ggml_build_forward_expand(gf, logits);
        api.ggml_opt_prepare_alloc(optCtx, ctx, gf, inputs.tokens, logits);
        api.ggml_opt_alloc(optCtx, train);
        // ggml_opt only clears its gradient accumulators between steps when opt_period > 1:
        // without this, every step would apply the sum of all gradients so far.
        if (train) api.ggml_opt_reset(optCtx, false);
        const tokens = new Int32Array(W * n);
        wins.forEach((w, b) => tokens.set(w.subarray(0, W), b * W));
        const startFlags = spec.documentStarts ? Array.from(ids, (w) => spec.documentStarts!.subarray(spec.starts[w]!, spec.starts[w]! + W)) : null;
        const { positions, mask } = documentLayout(wins, W, spec.documentStart < 0 ? null : spec.documentStart, startFlags);
        api.ggml_backend_tensor_set(inputs.tokens, tokens, 0, tokens.byteLength);
        api.ggml_backend_tensor_set(inputs.positions, positions, 0, positions.byteLength);
        api.ggml_backend_tensor_set(inputs.mask, mask, 0, mask.byteLength);
        spec.steering.forEach((op, i) => api.ggml_backend_tensor_set(inputs.steer[i]!, op.vec, 0, op.vec.byteLength));
        if (rows && inputs.rows) api.ggml_backend_tensor_set(inputs.rows, rows, 0, rows.byteLength);
        const target = (r: number) => wins[Math.floor(r / W)]![(r % W) + 1]!;
        const hot = (k: number) => k * hp.nVocab + target(rows ? rows[k]! : k);
        for (let k = 0; k < nRows; k++) labels[hot(k)] = 1;
        const used = labels.subarray(0, hp.nVocab * nRows);
        api.ggml_backend_tensor_set(api.ggml_opt_labels(optCtx), used, 0, used.byteLength);
        for (let k = 0; k < nRows; k++) labels[hot(k)] = 0;
        api.ggml_opt_result_reset(result);
        api.ggml_opt_eval(optCtx, result);
        api.ggml_opt_result_loss(result, lossOut, uncOut);
      } finally {
        api.ggml_free(ctx);
      }
      const loss = lossOut[0]!;
      if (!Number.isFinite(loss)) {
        throw new PersonaError("E_NATIVE", `the loss became ${loss} at step ${step} (learning rate ${lr.toExponential(2)} too high?)`);
      }
      return { loss, scored: nRows };
    };

    const losses: number[] = [];
    const valLosses: number[] = [];
    const t0 = performance.now();
    const tokensPerSecond = () => (step * B * W) / Math.max(1e-9, (performance.now() - t0) / 1000);
    for (let epoch = 1; epoch <= spec.epochs; epoch++) {
      const order = shuffled(nTrain, spec.seed + epoch - 1);
      let sum = 0;
      for (let i = 0; i < stepsPerEpoch; i++) {
        if (hooks.shouldAbort?.()) throw new PersonaError("E_ABORTED", `training cancelled after ${step} steps`);
        lr = learningRateAt(spec, step, totalSteps);
        sum += runBatch(order.subarray(i * B, (i + 1) * B), true).loss;
        step++;
        hooks.onProgress?.({
          epoch,
          epochs: spec.epochs,
          step,
          steps: totalSteps,
          loss: sum / (i + 1),
          learningRate: lr,
          tokensPerSecond: tokensPerSecond(),
          epochDone: false,
        });
      }
      losses.push(sum / stepsPerEpoch);
      let valLoss: number | undefined;
      if (spec.valCount > 0) {
        // Token-weighted, so that it is the mean loss over every scored validation token.
        let v = 0;
        let scored = 0;
        for (let w = nTrain; w < spec.starts.length; w++) {
          if (hooks.shouldAbort?.()) throw new PersonaError("E_ABORTED", `training cancelled after ${step} steps`);
          const r = runBatch([w], false);
          v += r.loss * r.scored;
          scored += r.scored;
        }
        valLoss = v / scored;
        valLosses.push(valLoss);
      }
      const p: TrainProgress = {
        epoch,
        epochs: spec.epochs,
        step,
        steps: totalSteps,
        loss: losses[losses.length - 1]!,
        learningRate: lr,
        tokensPerSecond: tokensPerSecond(),
        epochDone: true,
      };
      if (valLoss !== undefined) p.valLoss = valLoss;
      hooks.onProgress?.(p);
    }
    const seconds = (performance.now() - t0) / 1000;
    const out: TrainResult = {
      losses,
      steps: step,
      tokens: step * B * W,
      seconds,
      tokensPerSecond: (step * B * W) / seconds,
      trainableTensors: trained,
      trainableParams,
    };
    if (spec.valCount > 0) out.valLosses = valLosses;
    if (spec.lora) {
      const read = (t: TensorHandle, n: number) => {
        const data = new Float32Array(n);
        api.ggml_backend_tensor_get(t, data, 0, data.byteLength);
        return data;
      };
      const r = spec.lora.rank;
      out.lora = {
        rank: r,
        scale: spec.lora.scale,
        tensors: [...lora].map(([name, { a, b }]) => {
          const [nIn, nOut] = [ne(weights.get(name)!, 0), ne(weights.get(name)!, 1)];
          return { name, nIn, nOut, a: read(a, nIn * r), b: read(b, r * nOut) };
        }),
      };
    }
    return out;
  } finally {
    api.ggml_opt_result_free(result);
    if (!isNull(opt)) api.ggml_opt_free(opt);
    if (!isNull(sched)) api.ggml_backend_sched_free(sched);
    if (loraBuf !== null) api.ggml_backend_buffer_free(loraBuf);
    if (loraCtx !== null) api.ggml_free(loraCtx);
    if (!isNull(backend)) api.ggml_backend_free(backend);
    unregisterCallback(optPars);
    // The trainable mark stays on a tensor for good; clear it so that inference graphs treat the
    // weights as plain weights again and a later run with a narrower `trainable` is honoured.
    for (const t of weights.values()) {
      const flags = readInt32(t, GGML_TENSOR_FLAGS_OFFSET);
      if (flags & GGML_TENSOR_FLAG_PARAM) writeInt32(t, GGML_TENSOR_FLAGS_OFFSET, flags & ~GGML_TENSOR_FLAG_PARAM);
    }
  }
}
