/** Messages between the main thread (host) and the engine worker. */
import type { LoraAdapter } from "../lora.js";
import type { SerializedError } from "../../errors.js";
import type { Job, JobResult } from "../batching.js";
import type { TrainProgress, TrainSpec } from "../train/options.js";
import type { ChatMessage, ModelInfo, PromptText, TokenLogprob } from "../types.js";
import type { ContextShape, CoreOptions } from "./core.js";

export type Request =
  | { op: "loadModel"; path: string; gpuLayers?: number; noMmap?: boolean; vocabOnly?: boolean; loras?: LoraAdapter[] }
  | { op: "freeModel"; modelId: number }
  | { op: "tokenize"; modelId: number; text: string; addSpecial: boolean; parseSpecial: boolean }
  | { op: "detokenize"; modelId: number; tokens: Int32Array; renderSpecial: boolean }
  | { op: "builtinTemplate"; modelId: number; messages: ChatMessage[]; addAssistant: boolean }
  | { op: "run"; modelId: number; jobs: Job[]; shape: ContextShape; sharePrefixes: boolean; streamTokens: boolean; abort: SharedArrayBuffer }
  | { op: "runTotals"; modelId: number }
  | { op: "scoreTree"; modelId: number; prompt: Int32Array; paths: Int32Array[] }
  | { op: "loopOpen"; modelId: number; shape: ContextShape }
  /** With `text`, the worker tokenizes it into the job's prompt and answers an `accepted` event. */
  | { op: "loopSubmit"; loopId: number; key: number; job: Job; text?: PromptText }
  | { op: "loopCancel"; loopId: number; key: number }
  | { op: "loopStats"; loopId: number }
  | { op: "loopClose"; loopId: number }
  | { op: "systemInfo" }
  | { op: "train"; modelId: number; spec: TrainSpec; abort: SharedArrayBuffer }
  | { op: "saveModel"; modelId: number; path: string };

export type RequestMessage = { id: number } & Request;

export type WorkerEvent =
  | { type: "result"; result: JobResult }
  | {
      type: "token";
      index: number;
      token: number;
      /** the token's bytes (may split a UTF-8 character) */
      piece: Uint8Array;
      projections?: Float32Array;
      logprob?: number;
      top?: TokenLogprob[];
    }
  | { type: "prompt"; nPromptTokens: number; reusedTokens: number; projections?: Float64Array }
  /** A loop request with a text prompt was tokenized, checked and queued. */
  | { type: "accepted"; nPromptTokens: number }
  | { type: "trainProgress"; progress: TrainProgress };

/** The worker posts one of these, or an array of them (what one decode-loop step posted). */
export type ResponseMessage =
  | { id: number; kind: "ok"; value: unknown }
  | { id: number; kind: "error"; error: SerializedError }
  | { id: number; kind: "event"; event: WorkerEvent }
  | { id: 0; kind: "log"; text: string };

export interface WorkerData {
  options: CoreOptions;
}

export interface LoadModelReply {
  id: number;
  info: ModelInfo;
}
