import { PersonaError } from "../../errors.js";
import type { LlamaApi, LlamaBatch } from "../ffi/llama.js";
import { viewInt32, viewInt32Indirect, viewInt8 } from "../ffi/llama.js";

/**
 * A native `llama_batch` filled through zero-copy views, one sequence id per token.
 * Owned by one NativeContext; reused for every decode.
 */
export class Batch {
  readonly capacity: number;
  private readonly native: LlamaBatch;
  private readonly token: Int32Array;
  private readonly pos: Int32Array;
  private readonly nSeqId: Int32Array;
  private readonly seqIds: Int32Array[];
  private readonly logits: Int8Array;
  private count = 0;
  private freed = false;

  constructor(private readonly api: LlamaApi, capacity: number) {
    this.capacity = capacity;
    this.native = api.llama_batch_init(capacity, 0, 1);
    this.token = viewInt32(this.native.token, capacity);
    this.pos = viewInt32(this.native.pos, capacity);
    this.nSeqId = viewInt32(this.native.n_seq_id, capacity);
    this.logits = viewInt8(this.native.logits, capacity);
    this.seqIds = Array.from({ length: capacity }, (_, i) => viewInt32Indirect(this.native.seq_id, i, 1));
  }

  get size(): number {
    return this.count;
  }

  clear(): void {
    this.count = 0;
  }

  /** Appends one token; returns its index in the batch (the index logits are read with). */
  add(token: number, pos: number, seq: number, wantLogits: boolean): number {
    if (this.count >= this.capacity) throw new PersonaError("E_INTERNAL", `batch full (${this.capacity} tokens)`);
    const i = this.count++;
    this.token[i] = token;
    this.pos[i] = pos;
    this.nSeqId[i] = 1;
    this.seqIds[i]![0] = seq;
    this.logits[i] = wantLogits ? 1 : 0;
    return i;
  }

  /** The struct to pass to llama_decode, sized to the tokens added so far. */
  toNative(): LlamaBatch {
    return { ...this.native, n_tokens: this.count };
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.api.llama_batch_free(this.native);
  }
}
