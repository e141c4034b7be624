/**
 * Training checkpoints: everything a killed run needs to go on exactly where it stopped. The
 * trained tensors (weights, or the LoRA A/B pairs), their AdamW moments, the step (which fixes the
 * data position, the learning rate and the optimiser's bias correction) and the losses so far,
 * in one GGUF written atomically (temp file, fsync, rename): a kill mid-write leaves the previous
 * checkpoint whole. The window order is a function of the seed and the epoch, so the step is
 * the whole of the data position and of the random state.
 *
 * A fingerprint of the data and settings is stored with it, so a checkpoint resumes only the run
 * that wrote it.
 */
import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import { PersonaError } from "../../errors.js";
import { getArray, getNumber, getString, readGguf, readTensorF32 } from "../gguf/reader.js";
import { GgufValueType } from "../gguf/types.js";
import { GgufWriter } from "../gguf/writer.js";
import { keptMeans } from "../steering.js";
import type { LlamaHParams } from "./graph.js";
import type { TrainSpec } from "./options.js";

export interface CheckpointTensor {
  value: Float32Array;
  /** AdamW's first and second moments (absent for SGD). */
  m?: Float32Array;
  v?: Float32Array;
}

export interface CheckpointState {
  /** Optimiser steps done (over all epochs). */
  step: number;
  /** Sum of the step losses of the epoch in progress. */
  epochLossSum: number;
  /** Train and validation loss of every finished epoch. */
  losses: number[];
  valLosses: number[];
  /** Training time so far, for the reported throughput. */
  seconds: number;
  /** By trained tensor name (a weight, or `<weight>.lora_a` / `.lora_b`). */
  tensors: Map<string, CheckpointTensor>;
}

const KEY = "persona.checkpoint";

/** A hash of everything that decides the training result apart from the thread count. */
export function trainFingerprint(spec: TrainSpec, hp: LlamaHParams): string {
  const h = createHash("sha256");
  const bytes = (a: ArrayBufferView | null) => h.update(a === null ? "null" : new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  const settings = { ...spec, tokens: undefined, starts: undefined, labelMask: undefined, documentStarts: undefined, checkpoint: undefined, steering: undefined };
  h.update(JSON.stringify({ settings, hp, steering: spec.steering.map((s) => ({ layer: s.layer, kind: s.kind, coef: s.coef, ...keptMeans(s) })) }));
  for (const a of [spec.tokens, spec.starts, spec.labelMask, spec.documentStarts, ...spec.steering.map((s) => s.vec)]) bytes(a);
  return h.digest("hex");
}

export async function writeCheckpoint(file: string, fingerprint: string, s: CheckpointState): Promise<void> {
  const w = new GgufWriter();
  w.setString("general.type", "persona-train-checkpoint");
  w.setString(`${KEY}.fingerprint`, fingerprint);
  w.setU64(`${KEY}.step`, s.step);
  w.setF64(`${KEY}.epoch_loss_sum`, s.epochLossSum);
  w.setF64(`${KEY}.seconds`, s.seconds);
  w.setArray(`${KEY}.losses`, GgufValueType.FLOAT64, s.losses);
  w.setArray(`${KEY}.val_losses`, GgufValueType.FLOAT64, s.valLosses);
  w.setStringArray(`${KEY}.tensors`, [...s.tensors.keys()]);
  // Tensors by index: a trained name plus a suffix could pass GGUF's 64-byte name limit.
  [...s.tensors.values()].forEach((t, i) => {
    w.addTensor(`t${i}`, [t.value.length], t.value);
    if (t.m && t.v) {
      w.addTensor(`t${i}.m`, [t.m.length], t.m);
      w.addTensor(`t${i}.v`, [t.v.length], t.v);
    }
  });
  await w.write(file);
}

/** The checkpoint at `file`, or null when there is none; refused when another run wrote it. */
export async function readCheckpoint(file: string, fingerprint: string): Promise<CheckpointState | null> {
  if (!(await stat(file).catch(() => undefined))?.isFile()) return null;
  const g = await readGguf(file);
  if (getString(g, "general.type") !== "persona-train-checkpoint") throw new PersonaError("E_BAD_FORMAT", `${file} is not a training checkpoint`);
  if (getString(g, `${KEY}.fingerprint`) !== fingerprint) {
    throw new PersonaError("E_CONFIG_MISMATCH", `checkpoint ${file} was written by a run with other data or settings; delete it to start over`);
  }
  const numbers = (key: string) => (getArray(g, `${KEY}.${key}`)?.items ?? []).map(Number);
  const names = (getArray(g, `${KEY}.tensors`)?.items ?? []).map(String);
  const tensors = new Map<string, CheckpointTensor>();
  for (const [i, name] of names.entries()) {
    const t: CheckpointTensor = { value: await readTensorF32(g, `t${i}`) };
    if (g.tensorsByName.has(`t${i}.m`)) {
      t.m = await readTensorF32(g, `t${i}.m`);
      t.v = await readTensorF32(g, `t${i}.v`);
    }
    tensors.set(name, t);
  }
  return {
    step: getNumber(g, `${KEY}.step`) ?? 0,
    epochLossSum: getNumber(g, `${KEY}.epoch_loss_sum`) ?? 0,
    losses: numbers("losses"),
    valLosses: numbers("val_losses"),
    seconds: getNumber(g, `${KEY}.seconds`) ?? 0,
    tensors,
  };
}
