/**
 * Persona vectors files (safetensors), as `persona vectors info|export|compare` read them: edits
 * of the JSON header (tensor entries, dtypes, shapes, offsets, our metadata keys and their JSON
 * values), of the 8-byte header length, of the float data, and raw byte damage.
 */
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { layerMatrix, writeVectors, type PersonaVectors } from "../../../src/vectors/format.js";
import { applySome, interestingInt, interestingNumber, jsonValue, mutateBytes, mutateJson, nastyString, writeUint } from "../mutate.js";
import { runCommands, type FuzzCase, type Target } from "../target.js";
import { bytesWrittenBy } from "../tmp.js";
import { TINY_MODEL, tinyModelSpec, writeSpec } from "./gguf.js";

const FILE = "v.safetensors";
const N_LAYER = 2;
const N_EMBD = 8;

/** A complete vectors file: all three tensors and every metadata key our format defines. */
export function sampleVectors(nLayer = N_LAYER, nEmbd = N_EMBD): PersonaVectors {
  const m = (k: number) => layerMatrix(nLayer + 1, nEmbd, Float32Array.from({ length: (nLayer + 1) * nEmbd }, (_, i) => Math.sin(i + k)));
  return {
    tensors: { response_avg: m(0), prompt_avg: m(1), prompt_last: m(2) },
    meta: {
      trait: "evil", source: "extract", model: { name: "tiny", arch: "llama", nLayer, nEmbd, fileHash: "sha256:00" },
      counts: { kept: 3, dropped: 1 }, judge: "demo", thresholds: { trait: 50, coherence: 50 }, createdAt: "2026-01-01T00:00:00Z",
      toolVersion: "persona-vectors@0.1.0", bestLayer: 1, extra: { note: "x" },
    },
  };
}

export function vectorsFileBytes(v: PersonaVectors): Promise<Uint8Array> {
  return bytesWrittenBy(".safetensors", (f) => writeVectors(f, v));
}

/** The tiny model and a vectors file of its shape: what the model-running targets start from. */
export async function tinyModelWithVectors(): Promise<{ model: Uint8Array; vectors: Uint8Array }> {
  return { model: await writeSpec(await tinyModelSpec()), vectors: await vectorsFileBytes(sampleVectors(TINY_MODEL.nLayer, TINY_MODEL.nEmbd)) };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function split(b: Uint8Array): { header: Record<string, unknown>; data: Uint8Array } {
  const len = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true));
  return { header: JSON.parse(Buffer.from(b.subarray(8, 8 + len)).toString("utf8")), data: b.subarray(8 + len) };
}

function join(header: unknown, data: Uint8Array, lengthDelta = 0): Uint8Array {
  const h = Buffer.from(JSON.stringify(header) ?? "null");
  const out = new Uint8Array(8 + h.length + data.length);
  writeUint(out, 0, 8, BigInt(Math.max(0, h.length + lengthDelta)));
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

const META_VALUES = (rng: Rng): string =>
  rng.pick([
    nastyString(rng), String(interestingNumber(rng)), "{}", "[]", "null", '{"name":"m","n_layer":-1,"n_embd":8}', '{"name":"m","n_layer":2,"n_embd":1e308}',
    '{"kept":1e400,"dropped":-0}', '{"trait":"NaN","coherence":null}', "1.5", "-1", "3", "999999999999999999999", "0x1", " 2", JSON.stringify(jsonValue(rng)),
  ]);

/** Edits a safetensors file: header JSON, metadata, one tensor's dtype/shape/offsets (of `tensors`), header length, data. */
export function mutateVectorsFile(rng: Rng, base: Uint8Array, tensors: readonly string[] = ["response_avg", "prompt_avg", "prompt_last"]): { bytes: Uint8Array; note: string } {
  const { header, data } = split(base);
  let out: Uint8Array | undefined;
  let d = Uint8Array.from(data);
  let delta = 0;
  const h = header as Record<string, Record<string, unknown>>;
  const note = applySome(rng, 3, [
    () => {
      const r = mutateJson(rng, header);
      out = join(r.doc, d);
      return `header: ${r.what}`;
    },
    () => {
      const key = rng.pick(["trait", "source", "model", "counts", "judge", "thresholds", "created_at", "tool_version", "best_layer", "zzz"]);
      const value = rng.chance(0.9) ? META_VALUES(rng) : jsonValue(rng);
      // An earlier edit may have made __metadata__ something other than an object.
      if (!isObject(h.__metadata__)) h.__metadata__ = {};
      h.__metadata__[key] = value;
      return `__metadata__.${key} edited`;
    },
    () => {
      const t = rng.pick(tensors);
      const e = h[t];
      if (!isObject(e)) return "no tensor";
      const field = rng.pick(["dtype", "shape", "data_offsets"]);
      e[field] =
        field === "dtype" ? rng.pick(["F16", "BF16", "F64", "I8", "BOOL", "U64", "F8_E4M3", "f32", "", "Q4_0"]) :
        field === "shape" ? rng.pick([[], [0, 8], [3], [3, 8, 1], [1, 8], [3, 0], [2 ** 31, 8], [3, -1], [3.5, 8], [9, 9], ["3", 8]]) :
        rng.pick([[0, 0], [0, 96], [96, 0], [0, 2 ** 53], [-1, 95], [0, 1e20], [1, 97], [0], [0, 96, 1]]);
      return `${t}.${field} = ${JSON.stringify(e[field])}`;
    },
    () => {
      delta = Number(BigInt.asIntN(32, interestingInt(rng, 4, 0n)) % 4096n);
      return `header length off by ${delta}`;
    },
    () => {
      const v = new DataView(d.buffer, d.byteOffset, d.byteLength);
      const n = 1 + rng.int(8);
      for (let i = 0; i < n && d.length >= 4; i++) v.setFloat32(4 * rng.int(Math.floor(d.length / 4)), rng.pick([NaN, Infinity, -Infinity, 3.4e38, -0, 1e-45]), true);
      return `${n} floats set to non-finite/extreme`;
    },
    () => {
      d = d.slice(0, rng.int(d.length + 1));
      return `data cut to ${d.length} bytes`;
    },
  ]);
  out = out ?? join(header, d, delta);
  if (rng.chance(0.25)) {
    const r = mutateBytes(rng, out);
    return { bytes: r.bytes, note: `${note}; ${r.what}` };
  }
  return { bytes: out, note };
}

export const vectorsTarget: Target<Uint8Array> = {
  name: "safetensors",
  description: "persona vectors .safetensors: header JSON, dtypes, shapes, offsets, metadata values, data (vectors info/export/compare)",
  setup: () => vectorsFileBytes(sampleVectors()),
  async make(rng, base): Promise<FuzzCase> {
    const m = mutateVectorsFile(rng, base);
    return {
      files: { [FILE]: m.bytes },
      commands: [
        ["vectors", "info", FILE, "--json"],
        ["vectors", "export", FILE, "--layer", rng.pick(["1", "2", "best", "0", "3"]), "--out", "out.gguf", "--force"],
        ["vectors", "compare", `${FILE}#prompt_last`, FILE, "--json"],
      ],
      note: m.note,
    };
  },
  run: (c, env) => runCommands(env, c.commands),
};
