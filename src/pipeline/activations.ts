/**
 * Residual activations of given (prompt, response) pairs, streamed from a JSONL file into one
 * safetensors file (`response_avg`, `prompt_avg`, `prompt_last`, each float32
 * [n_samples, n_layer+1, n_embd]). Memory does not grow with the number of samples: the input is
 * read line by line (once to validate and count, once to capture), samples go to the engine in
 * slices, and each sample's rows are written straight to their place in the output file.
 */
import type { FileHandle } from "node:fs/promises";
import { z } from "zod";
import type { Model } from "../engine/Model.js";
import type { ResolvedSteering } from "../engine/steering.js";
import type { CaptureSample } from "../engine/types.js";
import { PersonaError } from "../errors.js";
import { readInputLines } from "../store/jsonl.js";
import { writeFileAtomic } from "../store/atomic.js";
import { float32Bytes, safetensorsHeader } from "../vectors/safetensors.js";

const Line = z.union([
  z.object({ prompt: z.string(), response: z.string() }).strict(),
  z.object({ messages: z.array(z.object({ role: z.string(), content: z.string() })).min(2) }).strict(),
]);

/** One input line: a raw pair (boundary = the prompt's own tokens) or a conversation (templated). */
export type CaptureInput = z.infer<typeof Line>;

/** The tensors written, in file order. */
export const ACTIVATION_TENSORS = ["response_avg", "prompt_avg", "prompt_last"] as const;

/** Reads `{"prompt","response"}` / `{"messages":[...]}` lines one at a time; errors name file:line. */
export async function* readCaptureInputs(file: string): AsyncGenerator<CaptureInput> {
  try {
    for await (const { line: n, text: raw } of readInputLines(file)) {
      let json: unknown;
      try {
        json = JSON.parse(raw);
      } catch {
        throw new PersonaError("E_BAD_FORMAT", `${file}:${n}: not valid JSON`);
      }
      const parsed = Line.safeParse(json);
      if (!parsed.success) {
        throw new PersonaError("E_BAD_FORMAT", `${file}:${n}: expected {"prompt","response"} or {"messages":[...]} with string fields`);
      }
      yield parsed.data;
    }
  } catch (e) {
    if (e instanceof PersonaError) throw e;
    throw new PersonaError("E_NOT_FOUND", `cannot read ${file}`, { cause: e });
  }
}

/** Validates every line of `file` without keeping any; returns how many samples it holds (≥ 1). */
export async function countCaptureInputs(file: string): Promise<number> {
  let n = 0;
  for await (const _ of readCaptureInputs(file)) n++;
  if (n === 0) throw new PersonaError("E_BAD_FORMAT", `${file} has no samples`);
  return n;
}

export interface CaptureToFileOptions {
  /** Samples in the input (from countCaptureInputs); the file's shape is fixed before capturing. */
  count: number;
  steering?: ResolvedSteering;
  /** Tokens per forward pass. Defaults to the engine's choice. */
  batchTokens?: number;
  /** Samples encoded and captured per engine call. Defaults to 256. */
  sliceSize?: number;
  signal?: AbortSignal;
  /** Each sample's tokens once encoded, in input order. */
  onEncoded?(index: number, sample: CaptureSample): void;
  /** After each sample's activations are written. */
  onCaptured?(): void;
}

/** Captures every input and writes the activations file at `out` (atomically); returns its shape. */
export async function captureActivationsToFile(
  model: Model,
  inputs: AsyncIterable<CaptureInput>,
  out: string,
  opts: CaptureToFileOptions,
): Promise<{ shape: [number, number, number] }> {
  const { nLayer, nEmbd } = model.info;
  const n = opts.count;
  const shape: [number, number, number] = [n, nLayer + 1, nEmbd];
  const sliceSize = opts.sliceSize ?? 256;
  const rowBytes = (nLayer + 1) * nEmbd * 4;
  const header = safetensorsHeader(new Map(ACTIVATION_TENSORS.map((name) => [name, shape])), {
    model: model.info.name,
    architecture: model.info.architecture,
    layers: "0 = embeddings, l = residual after block l-1",
  });
  const tensorStart = (t: number) => header.length + t * n * rowBytes;

  await writeFileAtomic(out, async (fh: FileHandle) => {
    await fh.write(header, 0, header.length, 0);
    let next = 0;
    const captureSlice = async (slice: CaptureSample[], first: number) => {
      const writes: Promise<unknown>[] = [];
      await model.capture(slice, {
        steering: opts.steering,
        batchTokens: opts.batchTokens,
        signal: opts.signal,
        onSample: (i, a) => {
          const at = (first + i) * rowBytes;
          const rows = [a.responseAvg, a.promptAvg, a.promptLast];
          rows.forEach((row, t) => writes.push(fh.write(float32Bytes(row), 0, rowBytes, tensorStart(t) + at)));
          opts.onCaptured?.();
        },
      });
      await Promise.all(writes);
    };
    let slice: CaptureSample[] = [];
    for await (const input of inputs) {
      if (next >= n) throw new PersonaError("E_BAD_INPUT", `the input holds more than the ${n} samples counted`);
      const sample = "messages" in input ? await model.encodeConversation(input.messages) : await model.encodePair(input.prompt, input.response);
      opts.onEncoded?.(next, sample);
      slice.push(sample);
      next++;
      if (slice.length === sliceSize) {
        await captureSlice(slice, next - slice.length);
        slice = [];
      }
    }
    if (slice.length > 0) await captureSlice(slice, next - slice.length);
    if (next !== n) throw new PersonaError("E_BAD_INPUT", `the input holds ${next} samples, not the ${n} counted`);
  });
  return { shape };
}
