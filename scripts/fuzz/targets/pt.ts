/**
 * The reference implementation's torch `.pt` files (zip + pickle), as `persona vectors info` and
 * `persona vectors import` read them: edits of the tensor description in the pickle (shape,
 * stride, offset, element count, storage type and key), of pickle opcodes, and of zip fields
 * (signatures, sizes, compression, name lengths, offsets), plus raw damage.
 */
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { dictPickle, ptArchive, singleTensorPickle, type TensorSpec } from "../../../test/helpers/torch-save.js";
import { applySome, interestingInt, mutateBytes, readUint, writeUint } from "../mutate.js";
import { runCommands, type FuzzCase, type Target } from "../target.js";

const ROWS = 3;
const COLS = 8;
const FILE = "evil_response_avg_diff.pt";

function floats(n: number): Uint8Array {
  const b = Buffer.alloc(n * 4);
  for (let i = 0; i < n; i++) b.writeFloatLE(Math.cos(i), i * 4);
  return b;
}

const TENSOR: TensorSpec = { storageType: "FloatStorage", key: "0", numel: ROWS * COLS, offset: 0, size: [ROWS, COLS], stride: [COLS, 1] };

function mutateSpec(rng: Rng, t: TensorSpec): string {
  const small = () => rng.pick([-1, 0, 1, 2, 3, 7, 8, 9, 24, 25, 255, 256, 65535, 65536, 2 ** 31 - 1]);
  switch (rng.int(6)) {
    case 0:
      t.size = rng.pick([[], [ROWS], [ROWS, COLS, 1], [small(), COLS], [ROWS, small()], [0, 0]]);
      return `size [${t.size.join(", ")}]`;
    case 1:
      t.stride = rng.pick([[], [1], [1, COLS], [0, 0], [small(), small()], [COLS, 1, 1]]);
      return `stride [${t.stride.join(", ")}]`;
    case 2:
      t.offset = small();
      return `storage offset ${t.offset}`;
    case 3:
      t.numel = small();
      return `numel ${t.numel}`;
    case 4:
      t.storageType = rng.pick(["HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage", "IntStorage", "ByteStorage", "BoolStorage", "Storage"]) as TensorSpec["storageType"];
      return `storage type ${t.storageType}`;
    default:
      t.key = rng.pick(["1", "", "../0", "0/0", "data.pkl", "x".repeat(300)]);
      return `storage key ${JSON.stringify(t.key)}`;
  }
}

/** Zip header fields by signature: [offset from the signature, size]. */
const ZIP_FIELDS: Record<number, [number, 2 | 4][]> = {
  0x04034b50: [[8, 2], [14, 4], [18, 4], [22, 4], [26, 2], [28, 2]],
  0x02014b50: [[10, 2], [16, 4], [20, 4], [24, 4], [28, 2], [30, 2], [32, 2], [42, 4]],
  0x06054b50: [[8, 2], [10, 2], [12, 4], [16, 4], [20, 2]],
};

function mutateZip(rng: Rng, b: Uint8Array): { bytes: Uint8Array; what: string } {
  const spots: [number, 2 | 4][] = [];
  for (let i = 0; i + 4 <= b.length; i++) {
    const fields = ZIP_FIELDS[Number(readUint(b, i, 4))];
    if (fields) for (const [off, size] of fields) if (i + off + size <= b.length) spots.push([i + off, size]);
  }
  if (spots.length === 0) return mutateBytes(rng, b);
  const [at, size] = rng.pick(spots);
  const out = Uint8Array.from(b);
  const v = interestingInt(rng, size, readUint(out, at, size));
  writeUint(out, at, size, v);
  return { bytes: out, what: `zip field at ${at} = ${v}` };
}

export const ptTarget: Target<null> = {
  name: "pt",
  description: "reference torch .pt files: zip fields, pickle opcodes, tensor size/stride/offset/storage (vectors info/import)",
  setup: async () => null,
  async make(rng): Promise<FuzzCase> {
    const t = structuredClone(TENSOR);
    const u = structuredClone(TENSOR);
    const dict = rng.chance(0.3);
    let pklEdit = "";
    const notes = [applySome(rng, 2, [() => mutateSpec(rng, t), () => mutateSpec(rng, rng.chance(0.5) ? t : u), () => ""])];
    let pkl = dict ? dictPickle([["response_avg", t], [rng.pick(["prompt_avg", "prompt_last", "response_avg", "x", ""]), u]]) : singleTensorPickle(t);
    if (rng.chance(0.3)) {
      const r = mutateBytes(rng, pkl);
      pkl = r.bytes;
      pklEdit = `pickle: ${r.what}`;
    }
    const storage = floats(rng.pick([ROWS * COLS, ROWS * COLS - 1, 0, 2 * ROWS * COLS]));
    let bytes = ptArchive(rng.pick(["evil_response_avg_diff", "archive", "", "a/b"]), pkl, { "0": storage, "1": storage }, rng.pick(["little", "little", "big", "middle", ""]));
    if (rng.chance(0.4)) {
      const r = rng.chance(0.7) ? mutateZip(rng, bytes) : mutateBytes(rng, bytes);
      bytes = r.bytes;
      notes.push(r.what);
    }
    return {
      files: { [FILE]: bytes },
      commands: [
        ["vectors", "info", FILE, "--json"],
        ["vectors", "import", FILE, "--out", "out.safetensors", "--force"],
      ],
      note: [dict ? "dict" : "tensor", ...notes, pklEdit].filter(Boolean).join("; "),
    };
  },
  run: (c, env) => runCommands(env, c.commands),
};
