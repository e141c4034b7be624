import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { readGguf, readTensorF32 } from "../src/engine/gguf/reader.js";
import { type PersonaVectors, layerMatrix, row, selectTensor } from "../src/vectors/format.js";
import { exportControlVector, importControlVector } from "../src/vectors/interop/cvec.js";
import { loadVectorsFile } from "../src/vectors/load.js";
import { writeSafetensors } from "../src/vectors/safetensors.js";
import { steeringSpecs } from "../src/vectors/steer.js";
import { personaError } from "./helpers/errors.js";


function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-interop-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("control vector GGUF import (llama.cpp / repeng)", () => {
  test("direction.k comes back as layer k+1, and import ∘ export is the identity on the exported layers", async () => {
    const v: PersonaVectors = {
      tensors: { prompt_last: layerMatrix(6, 8, rand(48, 7)) },
      meta: { trait: "calm", source: "extract", model: { name: "tiny", arch: "qwen2", nLayer: 5, nEmbd: 8 } },
    };
    const file = path.join(dir, "calm.gguf");
    await exportControlVector(file, v, { layers: [2, 4, 5] });
    const back = await importControlVector(file, { nLayer: 5 });
    assert.equal(back.meta.trait, "calm");
    assert.equal(back.meta.source, "import-cvec");
    assert.deepEqual(Object.keys(back.tensors), ["prompt_last"]);
    const m = selectTensor(back);
    assert.deepEqual([m.nLayerPlus1, m.nEmbd], [6, 8]);
    for (let l = 0; l <= 5; l++) {
      const want = [2, 4, 5].includes(l) ? [...row(v.tensors.prompt_last!, l)] : new Array(8).fill(0);
      assert.deepEqual([...row(m, l)], want, `layer ${l}`);
    }
    // Exporting the import again writes the same direction tensors, bit for bit.
    const again = path.join(dir, "calm2.gguf");
    await exportControlVector(again, back, { layers: [2, 4, 5] });
    const [g1, g2] = [await readGguf(file), await readGguf(again)];
    for (const name of ["direction.1", "direction.3", "direction.4"]) assert.deepEqual(await readTensorF32(g2, name), await readTensorF32(g1, name));

    // Without n_layer the matrix ends at the highest steered layer; a larger layer than the model has is refused.
    assert.equal(selectTensor(await loadVectorsFile(file)).nLayerPlus1, 6);
    await assert.rejects(importControlVector(file, { nLayer: 4 }), personaError("E_SHAPE", /layer 5/));
  });
});

describe("bare safetensors from other tools", () => {
  test("a [n_layer+1, n_embd] tensor of any name is a vectors file; an [n_embd] vector needs its layer", async () => {
    const full = path.join(dir, "steer_vec.safetensors");
    const data = rand(5 * 4, 3);
    await writeSafetensors(full, new Map([["hidden", { shape: [5, 4], data }]]));
    const v = await loadVectorsFile(full);
    assert.equal(v.meta.trait, "steer_vec");
    assert.deepEqual([...selectTensor(v, "response_avg").data], [...data]);
    assert.deepEqual(Object.keys((await loadVectorsFile(full, { tensor: "prompt_last" })).tensors), ["prompt_last"]);
    await assert.rejects(loadVectorsFile(full, { nLayer: 7 }), personaError("E_SHAPE", /\[8, n_embd\]/));

    const one = path.join(dir, "one.safetensors");
    const vec = rand(4, 9);
    await writeSafetensors(one, new Map([["v", { shape: [4], data: vec }]]));
    await assert.rejects(loadVectorsFile(one), personaError("E_BAD_INPUT", /give its layer/));
    const placed = selectTensor(await loadVectorsFile(one, { layer: 3, nLayer: 4 }));
    assert.deepEqual([...row(placed, 3)], [...vec]);
    assert.deepEqual([...row(placed, 2)], [0, 0, 0, 0]);

    const two = path.join(dir, "two.safetensors");
    await writeSafetensors(two, new Map([["a", { shape: [4], data: vec }], ["b", { shape: [4], data: vec }]]));
    await assert.rejects(loadVectorsFile(two), personaError("E_BAD_FORMAT", /cannot tell which/));
  });

  test("steering specs take a bare file, an [n_embd] vector at an explicit layer, a prompt_last-only file and a control vector", async () => {
    const model = { path: path.join(dir, "model.gguf"), nLayer: 4, nEmbd: 4 };
    const bare = path.join(dir, "bare.safetensors");
    const data = rand(5 * 4, 11);
    await writeSafetensors(bare, new Map([["direction", { shape: [5, 4], data }]]));
    const one = path.join(dir, "single.safetensors");
    const vec = rand(4, 12);
    await writeSafetensors(one, new Map([["v", { shape: [4], data: vec }]]));
    const last = path.join(dir, "last.safetensors");
    await writeSafetensors(last, new Map([["prompt_last", { shape: [5, 4], data }]]), { trait: "x" });
    const cvec = path.join(dir, "cv.gguf");
    await exportControlVector(cvec, { tensors: { response_avg: layerMatrix(5, 4, data) }, meta: { trait: "x", source: "t" } }, { layers: [3] });

    const specs = await steeringSpecs(
      [
        { source: bare, layer: 2, coef: 1, positions: "all", mode: "add" },
        { source: one, layer: 3, coef: -2, positions: "all", mode: "add" },
        { source: last, layer: 4, coef: 1, positions: "all", mode: "add" },
        { source: cvec, layer: 3, coef: 1, positions: "all", mode: "add" },
      ],
      model,
    );
    assert.deepEqual([...specs[0]!.vector], [...data.subarray(8, 12)]);
    assert.deepEqual([...specs[1]!.vector], [...vec]);
    assert.deepEqual([...specs[2]!.vector], [...data.subarray(16, 20)]);
    assert.deepEqual([...specs[3]!.vector], [...data.subarray(12, 16)]);
    await assert.rejects(steeringSpecs([{ source: one, layer: undefined, coef: 1, positions: "all", mode: "add" }], model), personaError("E_BAD_INPUT", /give its layer/));
  });
});
