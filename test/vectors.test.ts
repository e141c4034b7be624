import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { getNumber, getString, readGguf, readTensorF32 } from "../src/engine/gguf/reader.js";
import {
  type PersonaVectors,
  layerMatrix,
  parseVectorRef,
  readVectors,
  selectTensor,
  row,
  updateVectorsMeta,
  writeVectors,
} from "../src/vectors/format.js";
import { exportControlVector } from "../src/vectors/interop/cvec.js";
import { RunningMean, cosine, cosinePerLayer, dot, layerNorms, meanDiff, norm, project, scale, unit } from "../src/vectors/math.js";
import { encodeSafetensors, parseSafetensors, readSafetensors, writeSafetensors } from "../src/vectors/safetensors.js";
import { runCli } from "./helpers/cli.js";
import { personaError } from "./helpers/errors.js";
// Built-in traits, --model demo and --judge demo come from the demo world's registration.
import "../src/demo/register.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const FIXTURE = path.resolve(repoRoot, "../shared/fixtures/reference/persona_vectors/Qwen3-4B/evil_response_avg_diff.pt");


/** Deterministic pseudo-random floats (LCG), so failures reproduce. */
function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

/** Hand-written safetensors bytes from a header object and a data section. */
function rawSafetensors(header: unknown, data: Uint8Array, headerLenOverride?: bigint): Uint8Array {
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLenOverride ?? BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

function sampleVectors(nLayerPlus1 = 5, nEmbd = 8): PersonaVectors {
  return {
    tensors: {
      response_avg: layerMatrix(nLayerPlus1, nEmbd, rand(nLayerPlus1 * nEmbd, 1)),
      prompt_avg: layerMatrix(nLayerPlus1, nEmbd, rand(nLayerPlus1 * nEmbd, 2)),
      prompt_last: layerMatrix(nLayerPlus1, nEmbd, rand(nLayerPlus1 * nEmbd, 3)),
    },
    meta: {
      trait: "evil",
      source: "extract",
      model: { name: "tiny", arch: "llama", nLayer: nLayerPlus1 - 1, nEmbd, fileHash: "sha256:abc" },
      counts: { kept: 90, dropped: 10 },
      judge: "openai:gpt-4.1-mini",
      thresholds: { trait: 50, coherence: 50 },
    },
  };
}

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "pv-vectors-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("safetensors", () => {
  test("round trip keeps tensors bit-exact, order and metadata; header is 8-byte aligned", async () => {
    const a = rand(12, 7);
    const b = Float32Array.from([0, -0, Infinity, -1e-40, 3.4e38]);
    const file = path.join(dir, "rt.safetensors");
    await writeSafetensors(file, new Map([["a", { shape: [3, 4], data: a }], ["b", { shape: [5], data: b }]]), { k: "v", json: '{"x":1}' });
    const bytes = await readFile(file);
    assert.equal((8 + Number(bytes.readBigUInt64LE(0))) % 8, 0);
    const got = await readSafetensors(file);
    assert.deepEqual([...got.tensors.keys()], ["a", "b"]);
    assert.deepEqual(got.tensors.get("a")!.shape, [3, 4]);
    assert.deepEqual(Buffer.from(got.tensors.get("a")!.data.buffer), Buffer.from(a.buffer));
    assert.deepEqual(Buffer.from(got.tensors.get("b")!.data.buffer), Buffer.from(b.buffer));
    assert.deepEqual(got.metadata, { k: "v", json: '{"x":1}' });
    // The atomic writer leaves no temp file behind.
    assert.deepEqual((await readdir(dir)).filter((f) => f.includes("rt.safetensors")), ["rt.safetensors"]);
  });

  test("F16, BF16 and F64 tensors are converted to float32", () => {
    const f16 = Buffer.alloc(6);
    [0x3c00, 0xc400, 0x7c00].forEach((h, i) => f16.writeUInt16LE(h, i * 2)); // 1, -4, +inf
    const bf16 = Buffer.alloc(4);
    [0x4049, 0xbf80].forEach((h, i) => bf16.writeUInt16LE(h, i * 2)); // 3.140625, -1
    const f64 = Buffer.alloc(16);
    f64.writeDoubleLE(0.1, 0);
    f64.writeDoubleLE(-2.5, 8);
    const header = {
      h: { dtype: "F16", shape: [3], data_offsets: [0, 6] },
      b: { dtype: "BF16", shape: [2], data_offsets: [6, 10] },
      d: { dtype: "F64", shape: [2, 1], data_offsets: [10, 26] },
    };
    const got = parseSafetensors(rawSafetensors(header, Buffer.concat([f16, bf16, f64])), "mixed.safetensors");
    assert.deepEqual([...got.tensors.get("h")!.data], [1, -4, Infinity]);
    assert.deepEqual([...got.tensors.get("b")!.data], [3.140625, -1]);
    assert.deepEqual([...got.tensors.get("d")!.data], [Math.fround(0.1), -2.5]);
    assert.deepEqual(got.metadata, {});
  });

  test("corrupt files are E_BAD_FORMAT naming the file", () => {
    const data = Buffer.alloc(16);
    const ok = { t: { dtype: "F32", shape: [4], data_offsets: [0, 16] } };
    assert.doesNotThrow(() => parseSafetensors(rawSafetensors(ok, data), "ok.safetensors"));
    const cases: [string, Uint8Array, RegExp][] = [
      ["tiny", Buffer.alloc(5), /shorter/],
      ["header length past end", rawSafetensors(ok, data, 10_000n), /header length/],
      ["huge header length", rawSafetensors(ok, data, 2n ** 62n), /header length/],
      ["offsets past end", rawSafetensors({ t: { dtype: "F32", shape: [4], data_offsets: [0, 32] } }, data), /outside/],
      ["dtype/shape mismatch", rawSafetensors({ t: { dtype: "F32", shape: [3], data_offsets: [0, 16] } }, data), /span 16 bytes/],
      ["reversed offsets", rawSafetensors({ t: { dtype: "F32", shape: [0], data_offsets: [8, 4] } }, data), /outside/],
      [
        "overlap",
        rawSafetensors(
          { t: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, u: { dtype: "F32", shape: [2], data_offsets: [4, 12] } },
          data,
        ),
        /overlap/,
      ],
      ["unknown dtype", rawSafetensors({ t: { dtype: "F128", shape: [1], data_offsets: [0, 16] } }, data), /dtype/],
      ["bad shape", rawSafetensors({ t: { dtype: "F32", shape: [-4], data_offsets: [0, 16] } }, data), /shape/],
      ["metadata not strings", rawSafetensors({ __metadata__: { n: 1 }, ...ok }, data), /__metadata__/],
      ["not JSON", Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]), Buffer.from("{{{{")]), /JSON/],
      ["integer tensor", rawSafetensors({ t: { dtype: "I32", shape: [4], data_offsets: [0, 16] } }, data), /only F32/],
    ];
    for (const [what, bytes, re] of cases) {
      assert.throws(() => parseSafetensors(bytes, "bad.safetensors"), personaError("E_BAD_FORMAT", /bad\.safetensors/), what);
      assert.throws(() => parseSafetensors(bytes, "bad.safetensors"), personaError("E_BAD_FORMAT", re), what);
    }
  });

  test("a missing file is E_NOT_FOUND; a shape that does not fit the data is refused on write", async () => {
    await assert.rejects(readSafetensors(path.join(dir, "nope.safetensors")), personaError("E_NOT_FOUND"));
    assert.throws(() => encodeSafetensors(new Map([["t", { shape: [2, 2], data: new Float32Array(3) }]])), personaError("E_SHAPE"));
  });
});

describe("vectors file format", () => {
  test("write then read returns the same tensors and metadata, with created_at and tool version filled", async () => {
    const v = sampleVectors();
    v.meta.extra = { note: "kept as is" };
    const file = path.join(dir, "v.safetensors");
    await writeVectors(file, v);
    const got = await readVectors(file);
    for (const n of ["response_avg", "prompt_avg", "prompt_last"] as const) {
      assert.deepEqual(got.tensors[n], v.tensors[n], n);
    }
    const { createdAt, toolVersion, ...rest } = got.meta;
    assert.deepEqual(rest, v.meta);
    assert.ok(!Number.isNaN(Date.parse(createdAt!)), createdAt);
    const pkg = JSON.parse(await readFile(path.join(repoRoot, "package.json"), "utf-8")) as { version: string };
    assert.equal(toolVersion, `persona-vectors@${pkg.version}`);
    // Structured metadata is stored as JSON strings with snake_case fields.
    const raw = await readSafetensors(file);
    assert.deepEqual(JSON.parse(raw.metadata.model!), { name: "tiny", arch: "llama", n_layer: 4, n_embd: 8, file_hash: "sha256:abc" });
    assert.equal(raw.metadata.trait, "evil");
  });

  test("row() is a view of one layer and checks its range", () => {
    const m = layerMatrix(3, 2, Float32Array.from([0, 1, 10, 11, 20, 21]));
    assert.deepEqual([...row(m, 1)], [10, 11]);
    row(m, 2)[0] = 99;
    assert.equal(m.data[4], 99);
    assert.throws(() => row(m, 3), personaError("E_SHAPE"));
    assert.throws(() => row(m, -1), personaError("E_SHAPE"));
    assert.throws(() => layerMatrix(3, 2, new Float32Array(5)), personaError("E_SHAPE"));
  });

  test("shape problems are reported with the shapes found", async () => {
    const v = sampleVectors();
    v.tensors.prompt_avg = layerMatrix(4, 8);
    await assert.rejects(writeVectors(path.join(dir, "x.safetensors"), v), personaError("E_BAD_FORMAT", /response_avg \[5, 8\].*prompt_avg \[4, 8\]/));

    const mismatch = sampleVectors();
    mismatch.meta.model!.nLayer = 7;
    await assert.rejects(writeVectors(path.join(dir, "x.safetensors"), mismatch), personaError("E_BAD_FORMAT", /n_layer=7/));

    // Files written by other tools: differing shapes, missing response_avg, stray tensors, 1-D tensors.
    const write = (name: string, tensors: [string, number[]][]) =>
      writeSafetensors(
        path.join(dir, name),
        new Map(tensors.map(([n, shape]) => [n, { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) }])),
        { trait: "evil" },
      );
    await write("diff.safetensors", [["response_avg", [5, 8]], ["prompt_last", [5, 4]]]);
    await assert.rejects(readVectors(path.join(dir, "diff.safetensors")), personaError("E_BAD_FORMAT", /prompt_last \[5, 4\]/));
    await write("last.safetensors", [["prompt_last", [5, 4]]]);
    assert.deepEqual(Object.keys((await readVectors(path.join(dir, "last.safetensors"))).tensors), ["prompt_last"]);
    await write("stray.safetensors", [["response_avg", [5, 4]], ["weights", [2]]]);
    await assert.rejects(readVectors(path.join(dir, "stray.safetensors")), personaError("E_BAD_FORMAT", /unexpected tensor "weights"/));
    await write("flat.safetensors", [["response_avg", [20]]]);
    await assert.rejects(readVectors(path.join(dir, "flat.safetensors")), personaError("E_BAD_FORMAT", /shape \[20\]/));
    await writeSafetensors(path.join(dir, "badmeta.safetensors"), new Map([["response_avg", { shape: [2, 2], data: new Float32Array(4) }]]), {
      trait: "evil",
      model: "{not json",
    });
    await assert.rejects(readVectors(path.join(dir, "badmeta.safetensors")), personaError("E_BAD_FORMAT", /"model"/));
  });

  test("updateVectorsMeta patches metadata atomically and keeps tensors", async () => {
    const file = path.join(dir, "u.safetensors");
    const v = sampleVectors();
    await writeVectors(file, v);
    const meta = await updateVectorsMeta(file, { bestLayer: 3 });
    assert.equal(meta.bestLayer, 3);
    const got = await readVectors(file);
    assert.equal(got.meta.bestLayer, 3);
    assert.equal(got.meta.judge, "openai:gpt-4.1-mini");
    assert.deepEqual(got.tensors.prompt_last, v.tensors.prompt_last);
    await updateVectorsMeta(file, { bestLayer: undefined });
    assert.equal((await readVectors(file)).meta.bestLayer, undefined);
    await assert.rejects(updateVectorsMeta(file, { bestLayer: 5 }), personaError("E_BAD_FORMAT", /best_layer 5/));
  });

  test("FILE[#TENSOR] references", async () => {
    assert.deepEqual(parseVectorRef("a/b.safetensors"), { path: "a/b.safetensors" });
    assert.deepEqual(parseVectorRef("a/b.safetensors#prompt_last"), { path: "a/b.safetensors", tensor: "prompt_last" });
    assert.deepEqual(parseVectorRef("we#ird/b.safetensors"), { path: "we#ird/b.safetensors" });
    assert.throws(() => parseVectorRef("b.safetensors#weights"), personaError("E_BAD_INPUT", /prompt_avg/));
    assert.throws(() => parseVectorRef("#prompt_avg"), personaError("E_BAD_INPUT"));

    const file = path.join(dir, "ref.safetensors");
    const v = sampleVectors();
    delete v.tensors.prompt_avg;
    await writeVectors(file, v);
    const back = await readVectors(file);
    assert.deepEqual(selectTensor(back, parseVectorRef(`${file}#prompt_last`).tensor), v.tensors.prompt_last);
    assert.equal(back.meta.trait, "evil");
    assert.throws(() => selectTensor(back, "prompt_avg"), personaError("E_NOT_FOUND", /present: response_avg, prompt_last/));
  });
});

describe("math", () => {
  const v = rand(64, 11);
  test("cosine: v with itself is 1, with −v is −1, orthogonal is 0, zero vector is NaN", () => {
    assert.ok(Math.abs(cosine(v, v) - 1) < 1e-12);
    assert.ok(Math.abs(cosine(v, scale(v, -1)) + 1) < 1e-12);
    assert.ok(Math.abs(cosine(v, scale(v, 3.5)) - 1) < 1e-7);
    assert.equal(cosine([1, 0], [0, 2]), 0);
    assert.ok(Number.isNaN(cosine(v, new Float32Array(64))));
    assert.throws(() => dot([1, 2], [1]), personaError("E_SHAPE"));
  });

  test("norm, unit and projection", () => {
    assert.equal(norm([3, 4]), 5);
    assert.ok(Math.abs(norm(unit(v)) - 1) < 1e-6);
    assert.ok(Math.abs(project([3, 4], [0, 10]) - 4) < 1e-12);
    // Projection of v on itself is its norm, and does not depend on the direction's scale.
    assert.ok(Math.abs(project(v, v) - norm(v)) < 1e-9);
    assert.ok(Math.abs(project(v, scale(v, 0.01)) - norm(v)) < 1e-5);
    assert.throws(() => project(v, new Float32Array(64)), personaError("E_BAD_INPUT"));
    assert.throws(() => unit([0, 0]), personaError("E_BAD_INPUT"));
  });

  test("layerNorms and cosinePerLayer work row by row", () => {
    const a = layerMatrix(3, 2, Float32Array.from([3, 4, 1, 0, 0, 0]));
    const b = layerMatrix(3, 2, Float32Array.from([-3, -4, 0, 1, 1, 1]));
    assert.deepEqual(layerNorms(a), [5, 1, 0]);
    const c = cosinePerLayer(a, b);
    assert.ok(Math.abs(c[0]! + 1) < 1e-12);
    assert.equal(c[1], 0);
    assert.ok(Number.isNaN(c[2]!));
    assert.throws(() => cosinePerLayer(a, layerMatrix(2, 3)), personaError("E_SHAPE"));
  });

  test("RunningMean equals a naive mean; meanDiff is mean(pos) − mean(neg)", () => {
    const size = 37;
    const samples = Array.from({ length: 50 }, (_, i) => rand(size, 100 + i).map((x) => x * 1000 + i));
    const rm = new RunningMean(size);
    for (const s of samples) rm.add(s);
    assert.equal(rm.count, 50);
    const mean = rm.mean();
    for (let j = 0; j < size; j++) {
      const naive = samples.reduce((acc, s) => acc + s[j]!, 0) / samples.length;
      assert.ok(Math.abs(mean[j]! - naive) <= Math.abs(naive) * 1e-6 + 1e-6, `element ${j}: ${mean[j]} vs ${naive}`);
    }
    const neg = new RunningMean(size);
    neg.add(samples[0]!);
    neg.add(samples[1]!);
    const d = meanDiff(rm, neg);
    for (let j = 0; j < size; j++) {
      const want = mean[j]! - (samples[0]![j]! + samples[1]![j]!) / 2;
      assert.ok(Math.abs(d[j]! - want) < 1e-3, `diff ${j}`);
    }
    assert.throws(() => rm.add(new Float32Array(3)), personaError("E_SHAPE"));
    assert.throws(() => new RunningMean(4).mean(), personaError("E_BAD_INPUT"));
    assert.throws(() => meanDiff(rm, new RunningMean(4)), personaError("E_SHAPE"));
  });
});

describe("llama.cpp control vector export", () => {
  test("layer L is written as a 1-D F32 direction.(L-1) = coef · row(L), with the controlvector keys", async () => {
    const v = sampleVectors(6, 8);
    const out = path.join(dir, "cvec.gguf");
    await exportControlVector(out, v, { layers: [4, 2], coef: -1.5 });
    const g = await readGguf(out);
    assert.equal(getString(g, "general.architecture"), "controlvector");
    assert.equal(getString(g, "controlvector.model_hint"), "llama");
    assert.equal(getNumber(g, "controlvector.layer_count"), 2);
    assert.deepEqual(
      g.tensors.map((t) => [t.name, t.typeName, t.ne]),
      [
        ["direction.1", "F32", [8]],
        ["direction.3", "F32", [8]],
      ],
    );
    for (const [name, layer] of [["direction.1", 2], ["direction.3", 4]] as const) {
      const got = await readTensorF32(g, name);
      const want = row(v.tensors.response_avg!, layer).map((x) => x * -1.5);
      assert.deepEqual([...got], [...want], name);
    }

    await exportControlVector(out, v, { layers: [5], tensor: "prompt_last", modelHint: "qwen2" });
    const g2 = await readGguf(out);
    assert.equal(getString(g2, "controlvector.model_hint"), "qwen2");
    assert.deepEqual([...(await readTensorF32(g2, "direction.4"))], [...row(v.tensors.prompt_last!, 5)]);
  });

  test("layers that llama.cpp cannot steer are refused with E_SHAPE", async () => {
    const v = sampleVectors(6, 8);
    const out = path.join(dir, "never.gguf");
    for (const layer of [0, 1, 6, 2.5]) {
      await assert.rejects(exportControlVector(out, v, { layers: [layer] }), personaError("E_SHAPE", /2\.\.5/), `layer ${layer}`);
    }
    await assert.rejects(exportControlVector(out, v, { layers: [] }), personaError("E_BAD_INPUT"));
    assert.equal(existsSync(out), false);
  });
});

describe("persona vectors CLI", () => {
  const cli = (...args: string[]) => runCli(["vectors", ...args]);

  test("info, export, compare and their errors", async () => {
    const file = path.join(dir, "cli.safetensors");
    const other = path.join(dir, "cli-other.safetensors");
    const small = path.join(dir, "cli-small.safetensors");
    const v = sampleVectors(5, 8);
    v.meta.bestLayer = 3;
    await writeVectors(file, v);
    const w = sampleVectors(5, 8);
    w.tensors.response_avg = layerMatrix(5, 8, scale(v.tensors.response_avg!.data, -2));
    await writeVectors(other, w);
    await writeVectors(small, sampleVectors(4, 8));
    const gguf = path.join(dir, "cli.gguf");

    // One at a time: in-process commands share the process's output sink.
    const info = await cli("info", file, "--json");
    const infoText = await cli("info", file);
    const exp = await cli("export", `${file}#prompt_avg`, "--layer", "best", "--coef", "2", "--out", gguf);
    const cmp = await cli("compare", file, other, "--json");
    const cmpBad = await cli("compare", file, small);
    const expBad = await cli("export", file, "--layer", "0", "--out", path.join(dir, "no.gguf"));
    const missing = await cli("info", path.join(dir, "missing.safetensors"));
    const help = await cli("export", "--help");

    assert.equal(info.code, 0, info.stderr);
    const j = JSON.parse(info.stdout) as { shape: number[]; tensors: string[]; meta: { trait: string; bestLayer: number }; norms: Record<string, number[]> };
    assert.deepEqual(j.shape, [5, 8]);
    assert.deepEqual(j.tensors, ["response_avg", "prompt_avg", "prompt_last"]);
    assert.equal(j.meta.trait, "evil");
    assert.equal(j.meta.bestLayer, 3);
    assert.deepEqual(j.norms.response_avg, layerNorms(v.tensors.response_avg!));

    assert.equal(infoText.code, 0, infoText.stderr);
    assert.match(infoText.stdout, /trait:\s+evil/);
    assert.match(infoText.stdout, new RegExp(`\\n\\s+4\\s+${layerNorms(v.tensors.response_avg!)[4]!.toFixed(4)}\\s`));

    assert.equal(exp.code, 0, exp.stderr);
    const g = await readGguf(gguf);
    assert.deepEqual(g.tensors.map((t) => t.name), ["direction.2"]);
    assert.deepEqual([...(await readTensorF32(g, "direction.2"))], [...row(v.tensors.prompt_avg!, 3)].map((x) => x * 2));

    assert.equal(cmp.code, 0, cmp.stderr);
    const c = JSON.parse(cmp.stdout) as { cosine: number[] };
    assert.equal(c.cosine.length, 5);
    for (const x of c.cosine) assert.ok(Math.abs(x + 1) < 1e-6, String(x));

    assert.equal(cmpBad.code, 1);
    assert.match(cmpBad.stderr, /\[5, 8\].*\[4, 8\].*E_SHAPE/);
    assert.equal(expBad.code, 1);
    assert.match(expBad.stderr, /E_SHAPE/);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /E_NOT_FOUND/);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Examples:[\s\S]*--layer 20/);
  });

  test("import converts the reference .pt fixture and refuses to overwrite", { skip: existsSync(FIXTURE) ? false : `fixture not found at ${FIXTURE}` }, async () => {
    const out = path.join(dir, "imported.safetensors");
    const first = await cli("import", FIXTURE, "--out", out, "--arch", "qwen3");
    assert.equal(first.code, 0, first.stderr);
    const v = await readVectors(out);
    assert.equal(v.meta.trait, "evil");
    assert.equal(v.meta.source, "import-pt");
    assert.deepEqual(v.meta.model, { name: "Qwen3-4B", arch: "qwen3", nLayer: 36, nEmbd: 2560 });
    assert.ok(Math.abs(layerNorms(v.tensors.response_avg!)[36]! - 47.16904) / 47.16904 < 1e-4);
    const again = await cli("import", FIXTURE, "--out", out);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /--force/);
  });
});
