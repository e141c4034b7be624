/**
 * Full-weight training of a loaded F32 model through llama.cpp's llama_opt_* API, in the engine
 * worker. Each call gets its own training context, set up once before llama_opt_init and never
 * touched after (setting anything on it later recreates its scheduler under the optimiser), and
 * freed at the end; inference contexts on the same model see the new weights at once.
 *
 * llama_opt_epoch is called once per window with a one-window dataset, rather than once per
 * epoch: that gives per-step losses, a seeded shuffle, cancellation and progress between steps
 * with no callback from inside native code. AdamW's state (and its step count) lives in the
 * context's optimiser, so it carries across these calls exactly as within one epoch.
 */
import { PersonaError } from "../../errors.js";
import {
  GGML_OPT_OPTIMIZER_TYPE_ADAMW,
  GGML_TENSOR,
  GGML_TENSOR_FLAGS_OFFSET,
  GGML_TENSOR_FLAG_PARAM,
  GGML_TYPE_F32,
  GGML_TYPE_I32,
  LLAMA_FLASH_ATTN_TYPE_DISABLED,
  isNull,
  readCString,
  readInt32,
  readInt64,
  readPointer,
  registerOptParsCallback,
  registerParamFilter,
  unregisterCallback,
  viewInt32,
  writeInt32,
  type LlamaContextParams,
  type LlamaOptParams,
  type OptimizerParams,
  type Ptr,
} from "../ffi/llama.js";
import { Batch } from "../native/Batch.js";
import type { NativeModel } from "../native/NativeModel.js";
import { learningRateAt, shuffled, validateSpec, type TrainProgress, type TrainResult, type TrainSpec } from "./options.js";

export interface TrainHooks {
  onProgress?(p: TrainProgress): void;
  shouldAbort?(): boolean;
}

/** llama.cpp skips these two after asking the filter (a FIXME in llama_set_param). */
const NEVER_TRAINED = new Set(["token_embd.weight", "rope_freqs.weight"]);

export function trainModel(model: NativeModel, spec: TrainSpec, threads: number, hooks: TrainHooks): TrainResult {
  validateSpec(spec, model.info);
  const { api } = model;
  const W = spec.contextLength;
  const nTrain = spec.starts.length - spec.valCount;
  const totalSteps = nTrain * spec.epochs;
  const wanted = spec.trainable ? new Set(spec.trainable) : null;

  let step = 0;
  let lr = learningRateAt(spec, 0, totalSteps);
  const offered: Ptr[] = [];
  const trained: string[] = [];
  let trainableParams = 0;
  const filter = registerParamFilter((t) => {
    offered.push(t);
    const name = readCString(t, GGML_TENSOR.name, GGML_TENSOR.nameLength);
    const take = wanted === null || wanted.has(name);
    if (take && !NEVER_TRAINED.has(name)) {
      trained.push(name);
      let n = 1;
      for (let d = 0; d < 4; d++) n *= readInt64(t, GGML_TENSOR.ne + 8 * d);
      trainableParams += n;
    }
    return take;
  });
  const optPars = registerOptParsCallback(
    (): OptimizerParams => ({
      adamw: { alpha: lr, beta1: spec.beta1, beta2: spec.beta2, eps: spec.eps, wd: spec.weightDecay },
      sgd: { alpha: lr, wd: spec.weightDecay },
    }),
  );

  let ctx: Ptr = null;
  let dataset: Ptr = null;
  let result: Ptr = null;
  try {
    const params = api.llama_context_default_params() as LlamaContextParams;
    params.n_ctx = W;
    // One window = one batch = one ubatch, so each llama_opt_epoch call is one optimiser step.
    params.n_batch = W;
    params.n_ubatch = W;
    params.n_seq_max = 1;
    params.n_threads = threads;
    params.n_threads_batch = threads;
    // OUT_PROD (the backward of the KV cache copies) has no F16 kernel; FLASH_ATTN_EXT has no backward.
    params.type_k = GGML_TYPE_F32;
    params.type_v = GGML_TYPE_F32;
    params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    params.no_perf = true;
    ctx = api.llama_init_from_model(model.handle, params);
    if (isNull(ctx)) throw new PersonaError("E_NATIVE", `llama.cpp could not create a training context of ${W} tokens${model.lastErrors()}`);
    // llama.cpp pads n_ctx to a multiple of 256; a datapoint is n_ctx tokens, of which the
    // optimiser reads the first n_ctx_train = W.
    const nCtx = api.llama_n_ctx(ctx) as number;
    // ggml_opt computes through the scheduler directly, and only llama_decode hands the context's
    // thread count to the CPU backend (else it keeps ggml's default of 4, which on a 2-core box
    // spends ~95% of the time spinning in ggml_barrier): one decode before llama_opt_init.
    const batch = new Batch(api, 1);
    try {
      batch.add(spec.tokens[spec.starts[0]!]!, 0, 0, true);
      const rc = api.llama_decode(ctx, batch.toNative()) as number;
      if (rc !== 0) throw new PersonaError("E_NATIVE", `llama_decode failed on the training context (code ${rc})${model.lastErrors()}`);
    } finally {
      batch.free();
    }

    const opt: LlamaOptParams = {
      n_ctx_train: W,
      param_filter: filter,
      param_filter_ud: null,
      get_opt_pars: optPars,
      get_opt_pars_ud: null,
      optimizer_type: GGML_OPT_OPTIMIZER_TYPE_ADAMW,
    };
    api.llama_opt_init(ctx, model.handle, opt);
    // ggml's backward pass aborts the process when the graph has no trainable tensor.
    if (trained.length === 0) {
      throw new PersonaError("E_BAD_INPUT", "no trainable tensor: `trainable` selects none that llama.cpp can train (token_embd.weight never trains)");
    }

    dataset = api.ggml_opt_dataset_init(GGML_TYPE_I32, GGML_TYPE_I32, nCtx, nCtx, 1, 1);
    result = api.ggml_opt_result_init();
    if (isNull(dataset) || isNull(result)) throw new PersonaError("E_NATIVE", "could not allocate the training dataset");
    const inputs = viewInt32(readPointer(api.ggml_opt_dataset_data(dataset), GGML_TENSOR.data), nCtx);
    const labels = viewInt32(readPointer(api.ggml_opt_dataset_labels(dataset), GGML_TENSOR.data), nCtx);
    const lossOut = new Float64Array(1);
    const uncOut = new Float64Array(1);

    /** One forward (and, when training, backward + AdamW step) over window `w`; its mean loss. */
    const runWindow = (w: number, train: boolean): number => {
      const at = spec.starts[w]!;
      inputs.set(spec.tokens.subarray(at, at + W));
      labels.set(spec.tokens.subarray(at + 1, at + W + 1));
      api.ggml_opt_result_reset(result);
      if (train) api.llama_opt_epoch(ctx, dataset, result, null, 1, null, null);
      else api.llama_opt_epoch(ctx, dataset, null, result, 0, null, null);
      api.ggml_opt_result_loss(result, lossOut, uncOut);
      const loss = lossOut[0]!;
      if (!Number.isFinite(loss)) {
        throw new PersonaError("E_NATIVE", `the loss became ${loss} at step ${step} (learning rate ${lr.toExponential(2)} too high?)`);
      }
      return loss;
    };

    const losses: number[] = [];
    const valLosses: number[] = [];
    const t0 = performance.now();
    const tokensPerSecond = () => (step * W) / Math.max(1e-9, (performance.now() - t0) / 1000);
    for (let epoch = 1; epoch <= spec.epochs; epoch++) {
      const order = shuffled(nTrain, spec.seed + epoch - 1);
      let sum = 0;
      for (let i = 0; i < nTrain; i++) {
        if (hooks.shouldAbort?.()) throw new PersonaError("E_ABORTED", `training cancelled after ${step} steps`);
        lr = learningRateAt(spec, step, totalSteps);
        sum += runWindow(order[i]!, true);
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
      losses.push(sum / nTrain);
      let valLoss: number | undefined;
      if (spec.valCount > 0) {
        let v = 0;
        for (let w = nTrain; w < spec.starts.length; w++) {
          if (hooks.shouldAbort?.()) throw new PersonaError("E_ABORTED", `training cancelled after ${step} steps`);
          v += runWindow(w, false);
        }
        valLoss = v / spec.valCount;
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
      tokens: step * W,
      seconds,
      tokensPerSecond: (step * W) / seconds,
      trainableTensors: trained,
      trainableParams,
    };
    if (spec.valCount > 0) out.valLosses = valLosses;
    return out;
  } finally {
    if (!isNull(result)) api.ggml_opt_result_free(result);
    if (!isNull(dataset)) api.ggml_opt_dataset_free(dataset);
    if (!isNull(ctx)) api.llama_free(ctx);
    unregisterCallback(filter);
    unregisterCallback(optPars);
    // llama_opt_init marks tensors as trainable for good; clear the mark so that inference graphs
    // treat them as plain weights again and a later run with a narrower `trainable` is honoured.
    for (const t of offered) {
      const flags = readInt32(t, GGML_TENSOR_FLAGS_OFFSET);
      if (flags & GGML_TENSOR_FLAG_PARAM) writeInt32(t, GGML_TENSOR_FLAGS_OFFSET, flags & ~GGML_TENSOR_FLAG_PARAM);
    }
  }
}
