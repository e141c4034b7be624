import assert from "node:assert/strict";
import { appendFile, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { RunDir, fingerprintFile, hashOf } from "../src/pipeline/rundir.js";

let root: string;
before(async () => {
  root = await mkdtemp(path.join(tmpdir(), "persona-run-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("run directories", () => {
  it("resume the same config and keep finished records", async () => {
    const dir = path.join(root, "a");
    const run = await RunDir.open(dir, "extract", { trait: "evil", n: 3 });
    assert.equal(run.resumed, false);
    const log = await run.records<{ score: number }>("judgements.jsonl");
    await log.append("x", { score: 1 });
    await log.append("y", { score: 2 });
    await log.close();
    const again = await RunDir.open(dir, "extract", { n: 3, trait: "evil" }); // key order does not matter
    assert.equal(again.resumed, true);
    const log2 = await again.records<{ score: number }>("judgements.jsonl");
    assert.equal(log2.size, 2);
    assert.deepEqual(log2.get("y"), { score: 2 });
    await log2.close();
    const info = JSON.parse(await readFile(path.join(dir, "run.json"), "utf8"));
    assert.equal(info.resumed_at.length, 1);
  });

  it("refuse another config unless restarted, and keep the old run aside", async () => {
    const dir = path.join(root, "b");
    await RunDir.open(dir, "extract", { n: 1 });
    await assert.rejects(RunDir.open(dir, "extract", { n: 2 }), { code: "E_CONFIG_MISMATCH", message: / holds an extract run with another configuration/ });
    const fresh = await RunDir.open(dir, "extract", { n: 2 }, { restart: true });
    assert.equal(fresh.resumed, false);
    const siblings = await readdir(root);
    assert.ok(siblings.some((s) => s.startsWith("b.old-")));
  });

  it("drop a torn last line and append cleanly after it", async () => {
    const dir = path.join(root, "c");
    const run = await RunDir.open(dir, "x", {});
    const log = await run.records<number>("r.jsonl");
    await log.append("a", 1);
    await log.close();
    await appendFile(run.path("r.jsonl"), '{"key":"b","val');
    const log2 = await run.records<number>("r.jsonl");
    assert.equal(log2.size, 1);
    await log2.append("c", 3);
    await log2.close();
    const lines = (await readFile(run.path("r.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => l.key), ["a", "c"]);
  });

  it("refuse a corrupt line in the middle", async () => {
    const dir = path.join(root, "d");
    const run = await RunDir.open(dir, "x", {});
    await writeFile(run.path("r.jsonl"), 'garbage\n{"key":"a","value":1}\n');
    await assert.rejects(run.records("r.jsonl"), { code: "E_BAD_FORMAT" });
  });

  it("hash configs stably and fingerprint files by content", async () => {
    assert.equal(hashOf({ a: 1, b: [1, 2] }), hashOf({ b: [1, 2], a: 1 }));
    assert.notEqual(hashOf({ a: 1 }), hashOf({ a: 2 }));
    const f1 = path.join(root, "f1");
    const f2 = path.join(root, "f2");
    await writeFile(f1, Buffer.alloc(20_000_000, 1));
    await writeFile(f2, Buffer.concat([Buffer.alloc(19_999_999, 1), Buffer.from([2])]));
    assert.equal(await fingerprintFile(f1), await fingerprintFile(f1));
    assert.notEqual(await fingerprintFile(f1), await fingerprintFile(f2));
  });
});
