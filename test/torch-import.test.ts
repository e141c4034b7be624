import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { importPt, parsePt, ptToVectors } from "../src/vectors/interop/torch.js";
import { presentTensors, selectTensor } from "../src/vectors/format.js";
import { mergeVectors } from "../src/vectors/load.js";
import { layerNorms } from "../src/vectors/math.js";
import { personaError } from "./helpers/errors.js";
import { dictPickle, op, ptArchive, singleTensorPickle, type TensorSpec } from "./helpers/torch-save.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const FIXTURE = path.resolve(repoRoot, "../shared/fixtures/reference/persona_vectors/Qwen3-4B/evil_response_avg_diff.pt");

const f32Bytes = (xs: number[], bigEndian = false): Uint8Array => {
  const b = Buffer.alloc(xs.length * 4);
  xs.forEach((x, i) => (bigEndian ? b.writeFloatBE(x, i * 4) : b.writeFloatLE(x, i * 4)));
  return b;
};
const u16Bytes = (xs: number[]): Uint8Array => {
  const b = Buffer.alloc(xs.length * 2);
  xs.forEach((x, i) => b.writeUInt16LE(x, i * 2));
  return b;
};

const isBadFormat = personaError("E_BAD_FORMAT");

// ---------------------------------------------------------------------------------------------

describe("reference .pt fixture", { skip: existsSync(FIXTURE) ? false : `fixture not found at ${FIXTURE} (needs ../shared/fixtures)` }, () => {
  test("evil_response_avg_diff.pt is a [37, 2560] tensor with the documented per-layer norms", async () => {
    const tensors = await importPt(FIXTURE);
    assert.equal(tensors.length, 1);
    const [t] = tensors;
    assert.equal(t!.name, undefined);
    assert.deepEqual(t!.shape, [37, 2560]);
    const norms = layerNorms({ nLayerPlus1: 37, nEmbd: 2560, data: t!.data });
    const expected: [number, number][] = [
      [0, 0.04597],
      [1, 0.4932],
      [2, 0.66689],
      [36, 47.16904],
    ];
    for (const [layer, want] of expected) {
      const got = norms[layer]!;
      assert.ok(Math.abs(got - want) / want < 1e-4, `layer ${layer}: norm ${got}, expected ${want}`);
    }
  });

  test("ptToVectors names the trait and tensor from the file name and the model from the folder", async () => {
    const v = await ptToVectors(FIXTURE);
    assert.equal(v.meta.trait, "evil");
    assert.equal(v.meta.source, "import-pt");
    assert.deepEqual(v.meta.model, { name: "Qwen3-4B", nLayer: 36, nEmbd: 2560 });
    assert.equal(v.tensors.response_avg!.nLayerPlus1, 37);
    assert.equal(v.tensors.prompt_avg, undefined);
  });
});

describe("hand-built torch files", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "pv-torch-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("a strided view with a storage offset is materialised row-major", () => {
    const storage = Array.from({ length: 20 }, (_, i) => i * 0.5 - 3);
    const spec: TensorSpec = { storageType: "FloatStorage", key: "0", numel: 20, offset: 2, size: [3, 4], stride: [1, 3] };
    const [t] = parsePt(ptArchive("archive", singleTensorPickle(spec), { "0": f32Bytes(storage) }), "strided.pt");
    assert.deepEqual(t!.shape, [3, 4]);
    const want: number[] = [];
    for (let i = 0; i < 3; i++) for (let j = 0; j < 4; j++) want.push(storage[2 + i * 1 + j * 3]!);
    assert.deepEqual([...t!.data], want);
  });

  test("a dict of float16, bfloat16 and float32 tensors (deflated storages) converts to float32", () => {
    // IEEE half: 1, -2, 0.5, 65504, smallest subnormal 2^-24; bfloat16: 1, -3.5.
    const half = [0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001];
    const bf16 = [0x3f80, 0xc060];
    const pkl = dictPickle([
      ["response_avg", { storageType: "HalfStorage", key: "0", numel: 5, offset: 0, size: [5], stride: [1] }],
      ["prompt_avg", { storageType: "BFloat16Storage", key: "1", numel: 2, offset: 0, size: [1, 2], stride: [2, 1] }],
      ["prompt_last", { storageType: "FloatStorage", key: "2", numel: 3, offset: 1, size: [2], stride: [1] }],
    ]);
    const out = parsePt(ptArchive("sd", pkl, { "0": u16Bytes(half), "1": u16Bytes(bf16), "2": f32Bytes([7, 8, 9]) }), "dict.pt");
    assert.deepEqual(
      out.map((t) => [t.name, t.shape, [...t.data]]),
      [
        ["response_avg", [5], [1, -2, 0.5, 65504, 2 ** -24]],
        ["prompt_avg", [1, 2], [1, -3.5]],
        ["prompt_last", [2], [8, 9]],
      ],
    );
  });

  test("big-endian storages are byte-swapped", () => {
    const spec: TensorSpec = { storageType: "FloatStorage", key: "0", numel: 3, offset: 0, size: [3], stride: [1] };
    const [t] = parsePt(ptArchive("be", singleTensorPickle(spec), { "0": f32Bytes([1.5, -2.25, 1e10], true) }, "big"), "be.pt");
    assert.deepEqual([...t!.data], [1.5, -2.25, Math.fround(1e10)]);
  });

  test("malformed or unsupported files are E_BAD_FORMAT naming the file", () => {
    const ok: TensorSpec = { storageType: "FloatStorage", key: "0", numel: 4, offset: 0, size: [4], stride: [1] };
    const good = ptArchive("a", singleTensorPickle(ok), { "0": f32Bytes([1, 2, 3, 4]) });
    assert.doesNotThrow(() => parsePt(good, "good.pt"));

    assert.throws(() => parsePt(Buffer.from("not a zip at all, just some bytes........"), "junk.pt"), (e) => isBadFormat(e) && /junk\.pt/.test((e as Error).message));
    // A view reaching past its storage.
    const over = ptArchive("a", singleTensorPickle({ ...ok, offset: 1 }), { "0": f32Bytes([1, 2, 3, 4]) });
    assert.throws(() => parsePt(over, "over.pt"), (e) => isBadFormat(e) && /exceeds its storage/.test((e as Error).message));
    // Storage bytes shorter than numel says.
    const short = ptArchive("a", singleTensorPickle(ok), { "0": f32Bytes([1, 2, 3]) });
    assert.throws(() => parsePt(short, "short.pt"), isBadFormat);
    // A pickle that calls something other than torch's rebuild functions.
    const evil = Uint8Array.from([...op.proto(), ...op.global("os", "system"), ...op.mark(), ...op.str("ls"), ...op.tuple(), ...op.reduce(), ...op.stop()]);
    assert.throws(() => parsePt(ptArchive("a", evil, {}), "evil.pt"), (e) => isBadFormat(e) && /os\.system/.test((e as Error).message));
    // Truncated pickle (no STOP).
    const pkl = singleTensorPickle(ok);
    assert.throws(() => parsePt(ptArchive("a", pkl.subarray(0, pkl.length - 1), { "0": f32Bytes([1, 2, 3, 4]) }), "trunc.pt"), isBadFormat);
    // A corrupted byte inside a stored member fails the CRC check.
    const corrupt = Buffer.from(good);
    const at = corrupt.indexOf(Buffer.from("a/data.pkl")) + "a/data.pkl".length + 3;
    corrupt[at] = corrupt[at]! ^ 0xff;
    assert.throws(() => parsePt(corrupt, "crc.pt"), (e) => isBadFormat(e) && /CRC/.test((e as Error).message));
    // A top-level value that is neither a tensor nor a dict of tensors.
    const list = Uint8Array.from([...op.proto(), 0x5d, ...op.stop()]);
    assert.throws(() => parsePt(ptArchive("a", list, {}), "list.pt"), (e) => isBadFormat(e) && /a list/.test((e as Error).message));
  });

  test("ptToVectors picks up the reference's sibling files and fills the model shape", async () => {
    const model = path.join(dir, "TinyModel");
    await mkdir(model);
    const spec: TensorSpec = { storageType: "FloatStorage", key: "0", numel: 6, offset: 0, size: [3, 2], stride: [2, 1] };
    await writeFile(path.join(model, "kind_response_avg_diff.pt"), ptArchive("kind_response_avg_diff", singleTensorPickle(spec), { "0": f32Bytes([1, 2, 3, 4, 5, 6]) }));
    await writeFile(path.join(model, "kind_prompt_last_diff.pt"), ptArchive("kind_prompt_last_diff", singleTensorPickle(spec), { "0": f32Bytes([6, 5, 4, 3, 2, 1]) }));
    const v = await ptToVectors(path.join(model, "kind_response_avg_diff.pt"), { model: { arch: "llama" } });
    assert.equal(v.meta.trait, "kind");
    assert.deepEqual(v.meta.model, { name: "TinyModel", arch: "llama", nLayer: 2, nEmbd: 2 });
    assert.deepEqual([...v.tensors.response_avg!.data], [1, 2, 3, 4, 5, 6]);
    assert.deepEqual([...v.tensors.prompt_last!.data], [6, 5, 4, 3, 2, 1]);
    assert.equal(v.tensors.prompt_avg, undefined);

    const alone = await ptToVectors(path.join(model, "kind_response_avg_diff.pt"), { siblings: false, trait: "nice" });
    assert.equal(alone.meta.trait, "nice");
    assert.equal(alone.tensors.prompt_last, undefined);

    // A prompt_last file alone is a vectors file holding that reduction only.
    const last = await ptToVectors(path.join(model, "kind_prompt_last_diff.pt"), { siblings: false });
    assert.deepEqual(Object.keys(last.tensors), ["prompt_last"]);
    assert.deepEqual([...selectTensor(last).data], [6, 5, 4, 3, 2, 1]);

    // Several reference files at once into one vectors file; the same reduction twice is refused.
    await writeFile(path.join(model, "kind_prompt_avg_diff.pt"), ptArchive("kind_prompt_avg_diff", singleTensorPickle(spec), { "0": f32Bytes([0, 1, 0, 1, 0, 1]) }));
    const parts = await Promise.all(
      ["kind_prompt_last_diff.pt", "kind_prompt_avg_diff.pt"].map(async (f) => ({ path: f, vectors: await ptToVectors(path.join(model, f), { siblings: false }) })),
    );
    const merged = mergeVectors(parts);
    assert.deepEqual(presentTensors(merged), ["prompt_avg", "prompt_last"]);
    assert.equal(merged.meta.trait, "kind");
    assert.deepEqual([...merged.tensors.prompt_avg!.data], [0, 1, 0, 1, 0, 1]);
    assert.throws(() => mergeVectors([parts[0]!, parts[0]!]), personaError("E_BAD_INPUT", /prompt_last is in both/));
    await assert.rejects(importPt(path.join(model, "missing.pt")), personaError("E_NOT_FOUND"));
  });
});
