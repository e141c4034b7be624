/**
 * One llama_context plus the hook callback through which every residual capture and every
 * steering edit runs (TransformerLens-style: one mechanism, per batch row). The scheduler asks
 * the callback about each graph node; we answer yes for the residual tensors a decode needs
 * (`embd` = layer 0, or `inp_scaled` where the architecture scales embeddings, as Gemma does;
 * `l_out-k` = layer k+1), then read them, edit them in place for steering
 * (later nodes see the edit) and fold them into per-sample accumulators. With the eval filter
 * (eval-filter.c, `npm run build:hooks`) the questions are answered in C and JS sees only the
 * hooked tensors; without it each question is a JS call.
 */
import { PersonaError } from "../../errors.js";
import type { RowSink } from "../capture.js";
import {
  GGML_TENSOR,
  GGML_TYPE_F32,
  LLAMA_FLASH_ATTN_TYPE_AUTO,
  LLAMA_FLASH_ATTN_TYPE_DISABLED,
  isNull,
  readCString,
  readInt32,
  readInt64,
  registerEvalCallback,
  registerTensorCallback,
  unregisterCallback,
  viewFloat32,
  viewUint8,
  type CallbackHandle,
  type ContextHandle,
  type EvalFilterApi,
  type EvalFilterHandle,
  type MemoryHandle,
  type ProcHandle,
  type TensorHandle,
} from "../ffi/llama.js";
import { ALL_POSITIONS, applyOpsToRow, ROW_PROMPT, type RowClass, type SteeringOp } from "../steering.js";
import { Batch } from "./Batch.js";
import { Threadpool } from "./Threadpool.js";
import type { NativeModel } from "./NativeModel.js";

export interface NativeContextOptions {
  /** Parallel sequences. */
  nSeqMax: number;
  /** Total KV cells, shared by all sequences (unified KV cache). */
  nCtx: number;
  /** Most tokens in one decode; also the ubatch size, so each decode is one graph run. */
  nBatch: number;
  /** F32 KV cache and no flash attention: activations match a float reference to ~1e-6. */
  exact: boolean;
  threads: number;
  /** Polling level of the context's CPU threadpool (0: idle workers sleep at once; 100: they spin). */
  poll: number;
  /**
   * The eval filter (eval-filter.c): graph nodes are told yes or no in C and JS is called only for
   * hooked tensors. Without it every node's question is a JS call; the results are the same.
   */
  evalFilter?: EvalFilterApi;
  /** Counted into (shared by an engine's contexts); else the context's own. */
  stats?: EvalStats;
}

/** Decodes that ran hooks, and the calls into JS their eval callback made. */
export interface EvalStats {
  decodes: number;
  jsCalls: number;
}

/** The eval callback as the scheduler gets it. */
interface EvalHook {
  fn: CallbackHandle | ProcHandle;
  userData: EvalFilterHandle | null;
  /** The JS function koffi registered for it. */
  registered: CallbackHandle;
  /** The native filter: its API, its handle and its per-layer "hook it" bytes, in native memory. */
  filter?: { api: EvalFilterApi; handle: EvalFilterHandle; wanted: Uint8Array };
}

/** What one decode's batch rows are: which slot owns each row, its position and which kind of token it is. */
export interface RowPlan {
  nTokens: number;
  owner: Int32Array;
  pos: Int32Array;
  cls: Uint8Array;
  /** Batch indices that request logits, in order (the last block only computes these rows). */
  outputs: Int32Array;
  nOutputs: number;
}

export interface SlotHooks {
  ops: readonly SteeringOp[];
  /** Capture and projection accumulators fed the rows of the layers each one's mask names. */
  sinks: readonly RowSink[];
  /**
   * Sinks of other sequences that will share this slot's KV cells below position `below` (a
   * forked prompt prefix): they take those rows too, as plain prompt rows, since they never
   * decode them themselves.
   */
  tees?: readonly Tee[];
}

export interface Tee {
  below: number;
  sinks: readonly RowSink[];
}

/**
 * Architectures whose graph adds llama.cpp's control vector to every block's output right before
 * naming it `l_out` (checked in the pinned release's src/models/*.cpp), so a control vector edits
 * exactly the tensor the hook would.
 */
const CONTROL_VECTOR_ARCHS = new Set(["llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "mistral3", "olmo2", "granite", "smollm3"]);

interface ActivePlan {
  rows: RowPlan;
  slots: readonly (SlotHooks | undefined)[];
  wanted: Uint8Array;
  error?: unknown;
}

export class NativeContext {
  readonly options: NativeContextOptions;
  readonly batch: Batch;
  private readonly ctx: ContextHandle;
  private readonly memory: MemoryHandle;
  private readonly hook: EvalHook;
  private readonly layerByName = new Map<string, number>();
  private readonly stats: EvalStats;
  /** The first four bytes of those names, as a little-endian int32. */
  private readonly namePrefixes = new Set<number>();
  private readonly nEmbd: number;
  private plan: ActivePlan | undefined;
  private scratch: Float32Array;
  private freed = false;
  private memoryEpoch = 0;
  private readonly pool: Threadpool | undefined;
  /** The steering set as the context's control vector, or null. */
  private controlVector: readonly SteeringOp[] | null = null;

  constructor(
    readonly model: NativeModel,
    options: NativeContextOptions,
  ) {
    this.options = options;
    const { api, info } = model;
    this.nEmbd = info.nEmbd;
    this.layerByName.set(info.architecture.startsWith("gemma") ? "inp_scaled" : "embd", 0);
    for (let k = 0; k < info.nLayer; k++) this.layerByName.set(`l_out-${k}`, k + 1);
    for (const name of this.layerByName.keys()) this.namePrefixes.add(Buffer.from(name).readInt32LE(0));
    this.scratch = new Float32Array(options.nBatch * info.nEmbd);

    this.stats = options.stats ?? { decodes: 0, jsCalls: 0 };
    this.hook = this.createHook(options.evalFilter);
    const params = api.llama_context_default_params();
    params.n_ctx = options.nCtx;
    params.n_batch = options.nBatch;
    params.n_ubatch = options.nBatch;
    params.n_seq_max = options.nSeqMax;
    params.n_threads = options.threads;
    params.n_threads_batch = options.threads;
    params.kv_unified = true; // keeps hook rows in batch order
    params.cb_eval = this.hook.fn;
    params.cb_eval_user_data = this.hook.userData;
    params.no_perf = true;
    if (options.exact) {
      params.type_k = GGML_TYPE_F32;
      params.type_v = GGML_TYPE_F32;
      params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    } else {
      params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
    }
    const ctx = api.llama_init_from_model(model.handle, params);
    if (isNull(ctx)) {
      this.freeHook();
      throw new PersonaError(
        "E_NATIVE",
        `llama.cpp could not create a context (n_ctx=${options.nCtx}, n_seq_max=${options.nSeqMax}, n_batch=${options.nBatch})${model.lastErrors()}`,
      );
    }
    if (model.loras.length > 0) {
      const rc = api.llama_set_adapters_lora(ctx, model.loras.map((l) => l.handle), model.loras.length, Float32Array.from(model.loras, (l) => l.scale));
      if (rc !== 0) {
        api.llama_free(ctx);
        this.freeHook();
        throw new PersonaError("E_NATIVE", `llama.cpp could not apply the LoRA adapters (code ${rc})${model.lastErrors()}`);
      }
    }
    this.ctx = ctx;
    this.pool = Threadpool.create(api, options.threads, options.poll);
    if (this.pool) api.llama_attach_threadpool(ctx, this.pool.native, this.pool.native);
    this.memory = api.llama_get_memory(ctx);
    this.batch = new Batch(api, options.nBatch);
  }

  /** The native filter when there is one (JS then sees only hooked tensors), else a JS callback for every node. */
  private createHook(filterApi: EvalFilterApi | undefined): EvalHook {
    if (!filterApi) {
      const registered = registerEvalCallback((t, ask) => this.onEval(t, ask));
      return { fn: registered, userData: null, registered };
    }
    const nLayers = this.model.info.nLayer + 1;
    const width = GGML_TENSOR.nameLength;
    const names = new Uint8Array(nLayers * width);
    for (const [name, layer] of this.layerByName) {
      const bytes = Buffer.from(name);
      if (bytes.length >= width) throw new PersonaError("E_INTERNAL", `tensor name ${name} does not fit ggml's ${width} bytes`);
      names.set(bytes, layer * width);
    }
    const registered = registerTensorCallback((t, layer) => this.onTensor(t, layer));
    const filter = filterApi.persona_eval_filter_new(names, nLayers, width, GGML_TENSOR.name, registered);
    if (isNull(filter)) {
      unregisterCallback(registered);
      throw new PersonaError("E_NATIVE", "the eval filter could not be created (out of memory?)");
    }
    const wanted = viewUint8(filterApi.persona_eval_filter_wanted(filter), nLayers);
    return { fn: filterApi.persona_eval_filter_callback(), userData: filter, registered, filter: { api: filterApi, handle: filter, wanted } };
  }

  private freeHook(): void {
    const f = this.hook.filter;
    f?.api.persona_eval_filter_free(f.handle);
    unregisterCallback(this.hook.registered);
  }

  /** Hooked decodes and their calls into JS, since the context (or its stats object) was made. */
  get evalStats(): Readonly<EvalStats> {
    return this.stats;
  }

  get handle(): ContextHandle {
    return this.ctx;
  }

  /**
   * Decodes the tokens in `this.batch`. `rows` says who owns each row; `slots[owner]` carries that
   * owner's steering ops and capture accumulator (or nothing).
   */
  decode(rows: RowPlan, slots: readonly (SlotHooks | undefined)[]): void {
    this.ensureAlive();
    const nLayers = this.model.info.nLayer + 1;
    const shared = this.sharedSteering(slots);
    this.setControlVector(shared);
    const wanted = new Uint8Array(nLayers);
    let any = false;
    const want = (sinks: readonly RowSink[]) => {
      for (const sink of sinks) {
        for (let l = 0; l < nLayers; l++) wanted[l]! |= sink.mask[l]!;
        any = true;
      }
    };
    for (const s of slots) {
      if (!s) continue;
      want(s.sinks);
      for (const t of s.tees ?? []) want(t.sinks);
      if (shared) continue;
      for (const op of s.ops) {
        wanted[op.layer] = 1;
        any = true;
      }
    }
    this.plan = any ? { rows, slots: shared ? slots.map((s) => s && { ...s, ops: [] }) : slots, wanted } : undefined;
    this.hook.filter?.wanted.set(wanted);
    this.installHooks(any);
    if (any) this.stats.decodes++;
    try {
      const rc = this.model.api.llama_decode(this.ctx, this.batch.toNative());
      if (rc !== 0) {
        const why = rc === 1 ? "no KV cache slot (context too small)" : rc === 2 ? "aborted" : `error code ${rc}`;
        throw new PersonaError("E_NATIVE", `llama_decode failed: ${why}${this.model.lastErrors()}`);
      }
      if (this.plan?.error) throw this.plan.error;
    } finally {
      this.plan = undefined;
    }
  }

  /**
   * The steering every row of this batch gets, when llama.cpp's control vector can apply it: every
   * slot carries the same ops, each adds a vector at its own layer ≥ 2 (the control vector cannot
   * reach block 0's output) at every position. Then the edit costs no JS call; the sum is the same
   * float32 addition the hook makes. Otherwise null: hooks steer. A vector for some positions only
   * stays with the hooks even in batches of steered rows alone: a request's prompt and its reply
   * would switch the control vector off and on, and each switch re-reserves llama.cpp's scheduler
   * (positions "response" cost a 32-token request on the demo model 6–12 % CPU that way, 2–4 %
   * through the eval filter).
   */
  private sharedSteering(slots: readonly (SlotHooks | undefined)[]): readonly SteeringOp[] | null {
    if (!CONTROL_VECTOR_ARCHS.has(this.model.info.architecture)) return null;
    let ops: readonly SteeringOp[] | null = null;
    for (const s of slots) {
      if (!s) continue;
      if (ops === null) ops = s.ops;
      else if (s.ops.length !== ops.length || s.ops.some((op, i) => op !== ops![i])) return null;
    }
    if (!ops || ops.length === 0) return null;
    const layers = new Set<number>();
    for (const op of ops) {
      if (op.kind !== "add" || op.layer < 2 || op.mask !== ALL_POSITIONS || layers.has(op.layer)) return null;
      layers.add(op.layer);
    }
    return ops;
  }

  /** Sets (or clears, for null) the control vector; a change makes llama.cpp rebuild its graphs. */
  private setControlVector(ops: readonly SteeringOp[] | null): void {
    const cur = this.controlVector;
    if (cur === ops || (cur && ops && cur.length === ops.length && cur.every((op, i) => op === ops[i]))) return;
    const api = this.model.api;
    const n = this.nEmbd;
    let rc: number;
    if (!ops) {
      rc = api.llama_set_adapter_cvec(this.ctx, null, 0, n, -1, -1);
    } else {
      // Slot il−1 of the buffer is added to block il's output, which is layer il+1 in our convention.
      const blocks = ops.map((op) => op.layer - 1);
      const hi = Math.max(...blocks);
      const data = new Float32Array(hi * n);
      for (const op of ops) data.set(op.vec, (op.layer - 2) * n);
      rc = api.llama_set_adapter_cvec(this.ctx, data, data.length, n, Math.min(...blocks), hi);
    }
    if (rc !== 0) throw new PersonaError("E_NATIVE", `llama.cpp could not set the control vector (code ${rc})${this.model.lastErrors()}`);
    this.controlVector = ops;
  }

  /**
   * The callback is part of the context's parameters, so llama.cpp re-installs it whenever it
   * rebuilds a graph; a decode without hooks takes it off the scheduler again, because an
   * installed callback is asked about every graph node (~350 a step on an 11-layer model: a JS
   * call each without the eval filter) and the hooked nodes split the graph's run. The
   * scheduler can be replaced inside a decode (after a LoRA change), so it is looked up each time.
   */
  private installHooks(on: boolean): void {
    const api = this.model.api;
    if (!api.llama_context_get_sched) return;
    const sched = api.llama_context_get_sched(this.ctx);
    if (!isNull(sched)) api.ggml_backend_sched_set_eval_callback(sched, on ? this.hook.fn : null, on ? this.hook.userData : null);
  }

  /** Logits of batch row `i` of the last decode; a view, valid until the next decode. */
  logits(i: number): Float32Array {
    const p = this.model.api.llama_get_logits_ith(this.ctx, i);
    if (isNull(p)) throw new PersonaError("E_NATIVE", `no logits for batch row ${i}`);
    return viewFloat32(p, this.model.info.nVocab);
  }

  removeSequence(seq: number): void {
    this.model.api.llama_memory_seq_rm(this.memory, seq, -1, -1);
  }

  /**
   * Drops `seq`'s cells from position `from` on; false, with `seq` emptied, when what stays is not
   * exactly positions 0..from-1 (recurrent memory cannot cut a sequence; a sliding window may have
   * dropped early cells).
   */
  removeTokens(seq: number, from: number): boolean {
    const api = this.model.api;
    if (api.llama_memory_seq_rm(this.memory, seq, from, -1) && this.holdsPrefix(seq, from)) return true;
    api.llama_memory_seq_rm(this.memory, seq, -1, -1);
    return false;
  }

  /** Whether `seq` holds exactly positions 0..n-1 (the cache guarantees every position between its min and max). */
  private holdsPrefix(seq: number, n: number): boolean {
    const api = this.model.api;
    return n === 0 ? api.llama_memory_seq_pos_max(this.memory, seq) === -1 : api.llama_memory_seq_pos_min(this.memory, seq) === 0 && api.llama_memory_seq_pos_max(this.memory, seq) === n - 1;
  }

  /** Makes `dst` share all of `src`'s KV cells (the unified cache copies no data). */
  copySequence(src: number, dst: number): void {
    this.model.api.llama_memory_seq_cp(this.memory, src, dst, -1, -1);
  }

  /**
   * Empties `dst`, then makes it share `src`'s KV cells at positions 0..n-1 (a forked prompt
   * prefix; the unified cache copies no data). False, with `dst` empty again, when the memory then
   * holds anything else for `dst` (a recurrent state, which is the whole sequence's; cells a
   * sliding window dropped): that sequence decodes its prompt itself.
   */
  sharePrefix(src: number, dst: number, n: number): boolean {
    this.ensureAlive();
    const nSeq = this.options.nSeqMax;
    // Out-of-range sequence ids fail a GGML_ASSERT in the KV cache.
    for (const seq of [src, dst]) if (!Number.isInteger(seq) || seq < 0 || seq >= nSeq) throw new PersonaError("E_INTERNAL", `sequence ${seq} is outside 0..${nSeq - 1}`);
    if (src === dst || !Number.isInteger(n) || n < 1) throw new PersonaError("E_INTERNAL", `cannot share ${n} cells of sequence ${src} with sequence ${dst}`);
    const api = this.model.api;
    api.llama_memory_seq_rm(this.memory, dst, -1, -1);
    api.llama_memory_seq_cp(this.memory, src, dst, 0, n);
    if (this.holdsPrefix(dst, n)) return true;
    api.llama_memory_seq_rm(this.memory, dst, -1, -1);
    return false;
  }

  clearMemory(): void {
    this.model.api.llama_memory_clear(this.memory, true);
    this.memoryEpoch++;
  }

  /** Changes whenever the KV cache is cleared: what a caller left in it is gone. */
  get epoch(): number {
    return this.memoryEpoch;
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.batch.free();
    this.model.api.llama_free(this.ctx);
    this.pool?.free();
    this.freeHook();
  }

  private ensureAlive(): void {
    if (this.freed) throw new PersonaError("E_DISPOSED", "context used after free");
  }

  /** The JS eval callback (no native filter): asked about every graph node, then called for the hooked ones. */
  private onEval(t: TensorHandle, ask: boolean): boolean {
    this.stats.jsCalls++;
    const plan = this.plan;
    // Most nodes are told no from one int32 read, without building their name.
    if (!plan || !this.namePrefixes.has(readInt32(t, GGML_TENSOR.name))) return !ask;
    const layer = this.layerByName.get(readCString(t, GGML_TENSOR.name, GGML_TENSOR.nameLength));
    if (ask) return layer !== undefined && plan.wanted[layer] === 1;
    return layer === undefined || this.hooked(t, layer);
  }

  /** The native filter's call into JS, for a hooked tensor. */
  private onTensor(t: TensorHandle, layer: number): boolean {
    this.stats.jsCalls++;
    return this.hooked(t, layer);
  }

  /** A hooked residual tensor, computed: read it, steer it, feed the accumulators. */
  private hooked(t: TensorHandle, layer: number): boolean {
    const plan = this.plan;
    if (!plan || plan.error) return true;
    try {
      this.processLayer(t, layer, plan);
    } catch (e) {
      // Throwing through native frames is not safe: park the error and raise it after decode.
      plan.error = e;
    }
    return true;
  }

  private processLayer(t: TensorHandle, layer: number, plan: ActivePlan): void {
    const api = this.model.api;
    const n = this.nEmbd;
    if (readInt32(t, GGML_TENSOR.type) !== GGML_TYPE_F32 || readInt64(t, GGML_TENSOR.ne) !== n) {
      throw new PersonaError("E_INTERNAL", `residual tensor at layer ${layer} is not F32 [${n}, *]`);
    }
    const nRows = readInt64(t, GGML_TENSOR.ne + 8);
    const { rows } = plan;
    // The last block keeps only the rows that asked for logits.
    const rowToken =
      nRows === rows.nTokens ? null : nRows === rows.nOutputs ? rows.outputs : undefined;
    if (rowToken === undefined) {
      throw new PersonaError("E_INTERNAL", `layer ${layer} has ${nRows} rows for a batch of ${rows.nTokens}`);
    }
    const bytes = nRows * n * 4;
    if (this.scratch.length < nRows * n) this.scratch = new Float32Array(nRows * n);
    const data = this.scratch.subarray(0, nRows * n);
    api.ggml_backend_tensor_get(t, data, 0, bytes);
    let changed = false;
    for (let r = 0; r < nRows; r++) {
      const tok = rowToken ? rowToken[r]! : r;
      const owner = rows.owner[tok]!;
      const slot = owner >= 0 ? plan.slots[owner] : undefined;
      if (!slot) continue;
      const row = data.subarray(r * n, (r + 1) * n);
      const cls = rows.cls[tok]! as RowClass;
      if (slot.ops.length > 0 && applyOpsToRow(slot.ops, layer, cls, row)) changed = true;
      for (const sink of slot.sinks) if (sink.mask[layer] === 1) sink.add(layer, cls, row);
      if (slot.tees) {
        const pos = rows.pos[tok]!;
        for (const tee of slot.tees) if (pos < tee.below) for (const sink of tee.sinks) if (sink.mask[layer] === 1) sink.add(layer, ROW_PROMPT, row);
      }
    }
    if (changed) api.ggml_backend_tensor_set(t, data, 0, bytes);
  }
}
