import assert from "node:assert/strict";
import { existsSync, readFileSync, readlinkSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { writeSyntheticModel } from "../src/engine/gguf/synthetic.js";
import { type HubEnv, hubEnv } from "../src/hub/cache.js";
import { parseHubRef, pullModel, selectGguf } from "../src/hub/pull.js";
import { resolveModelRef } from "../src/hub/resolve.js";
import { personaError } from "./helpers/errors.js";
import { type FakeHub, sha256, startFakeHub } from "./helpers/fake-hub.js";
// The demo world registers `demo`, which the not-found message lists.
import "../src/demo/register.js";
import { runCli } from "./helpers/cli.js";


let dir: string;
let hub: FakeHub;
let model: Uint8Array;
const big = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251);

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-hub-"));
  const gguf = path.join(dir, "tiny.gguf");
  await writeSyntheticModel(gguf, { arch: "llama", nLayer: 2, nEmbd: 32, nHead: 2, nHeadKv: 2, nFf: 64, contextLength: 128, seed: 1 });
  model = await readFile(gguf);
  hub = await startFakeHub({
    "acme/Tiny-GGUF": {
      files: {
        "README.md": Buffer.from("# tiny"),
        "tiny-Q8_0.gguf": model,
        "tiny-Q4_K_M.gguf": big,
        "big/tiny-F16-00001-of-00002.gguf": big.subarray(0, 1000),
        "big/tiny-F16-00002-of-00002.gguf": big.subarray(1000, 5000),
      },
    },
    "acme/Gated-GGUF": { files: { "g-Q4_K_M.gguf": big.subarray(0, 2000) }, gatedToken: "hf_secret" },
  });
});
after(async () => {
  await hub.close();
  await rm(dir, { recursive: true, force: true });
});

const envFor = (cache: string, extra: Partial<HubEnv> = {}): HubEnv => ({ cacheDir: cache, endpoint: hub.origin, token: undefined, offline: false, ...extra });

describe("hub references", () => {
  test("parse and pick files: quant, path, default, splits, and clear errors", () => {
    assert.deepEqual(parseHubRef("hf:Qwen/Qwen2.5-7B-Instruct-GGUF:Q4_K_M"), { repo: "Qwen/Qwen2.5-7B-Instruct-GGUF", quant: "Q4_K_M" });
    assert.deepEqual(parseHubRef("a/b/sub/x.gguf"), { repo: "a/b", file: "sub/x.gguf" });
    assert.throws(() => parseHubRef("hf:nope"), personaError("E_BAD_INPUT", /OWNER\/NAME/));
    const files = ["m-Q4_K_M.gguf", "m-q8_0.gguf", "x/m-F16-00002-of-00002.gguf", "x/m-F16-00001-of-00002.gguf", "mmproj-f16.gguf", "README.md"];
    assert.deepEqual(selectGguf(files, { repo: "a/b" }), ["m-Q4_K_M.gguf"]);
    assert.deepEqual(selectGguf(files, { repo: "a/b", quant: "Q8_0" }), ["m-q8_0.gguf"]);
    assert.deepEqual(selectGguf(files, { repo: "a/b", quant: "f16" }), ["x/m-F16-00001-of-00002.gguf", "x/m-F16-00002-of-00002.gguf"]);
    assert.deepEqual(selectGguf(files, { repo: "a/b", file: "x/m-F16-00002-of-00002.gguf" }), ["x/m-F16-00001-of-00002.gguf", "x/m-F16-00002-of-00002.gguf"]);
    assert.throws(() => selectGguf(files, { repo: "a/b", quant: "Q2_K" }), personaError("E_NOT_FOUND", /m-Q4_K_M\.gguf/));
    assert.throws(() => selectGguf(["a-Q5_0.gguf", "a-Q6_K.gguf"], { repo: "a/b" }), personaError("E_BAD_INPUT", /name one/));
    assert.throws(() => selectGguf(["s-00001-of-00003.gguf", "s-00002-of-00003.gguf"], { repo: "a/b" }), personaError("E_NOT_FOUND", /3 parts/));
  });
});

describe("pull from a hub-like server", () => {
  test("downloads into the hub cache layout through the CDN redirect, resumes a cut transfer, then serves from cache and offline", async () => {
    const cache = path.join(dir, "cache1");
    hub.cutAfter.set("tiny-Q4_K_M.gguf", 100_000);
    hub.log.length = 0;
    const seen: number[] = [];
    const r = await pullModel("acme/Tiny-GGUF", { env: envFor(cache), onProgress: (p) => seen.push(p.received) });
    const repoDir = path.join(cache, "models--acme--Tiny-GGUF");
    const commit = readFileSync(path.join(repoDir, "refs", "main"), "utf8");
    assert.equal(r.commit, commit);
    assert.equal(r.modelPath, path.join(repoDir, "snapshots", commit, "tiny-Q4_K_M.gguf"));
    assert.equal(readlinkSync(r.modelPath), path.join("..", "..", "blobs", sha256(big)));
    assert.deepEqual(await readFile(r.modelPath), Buffer.from(big));
    assert.equal(r.downloaded, big.length);
    // One cut transfer, then one ranged request that started where the cut left off.
    const cdn = hub.log.filter((l) => l.path.startsWith("/cdn/"));
    assert.equal(cdn.length, 2);
    assert.equal(cdn[1]!.range, "bytes=100000-");
    assert.ok(seen.includes(100_000) && seen.at(-1) === big.length);
    assert.deepEqual(await readdir(path.join(repoDir, "blobs")), [sha256(big)]);

    hub.log.length = 0;
    const again = await pullModel("acme/Tiny-GGUF:Q4_K_M", { env: envFor(cache) });
    assert.equal(again.downloaded, 0);
    assert.equal(hub.log.filter((l) => l.path.startsWith("/cdn/")).length, 0);
    const offline = await pullModel("acme/Tiny-GGUF:Q4_K_M", { env: envFor(cache, { endpoint: "http://127.0.0.1:9" }), offline: true });
    assert.equal(offline.modelPath, r.modelPath);
    await assert.rejects(pullModel("acme/Tiny-GGUF:Q8_0", { env: envFor(cache), offline: true }), personaError("E_NOT_FOUND", /Q8_0/));
    await assert.rejects(pullModel("acme/Other", { env: envFor(cache), offline: true }), personaError("E_NOT_FOUND", /not in the hub cache/));
  });

  test("split GGUFs arrive whole; gated repos need the token (never sent to the CDN); 404s and a corrupt CDN are clear errors", async () => {
    const cache = path.join(dir, "cache2");
    const split = await pullModel("hf:acme/Tiny-GGUF:F16", { env: envFor(cache) });
    assert.equal(split.files.length, 2);
    assert.match(split.modelPath, /big\/tiny-F16-00001-of-00002\.gguf$/);
    assert.deepEqual(await readFile(split.files[1]!), Buffer.from(big.subarray(1000, 5000)));

    await assert.rejects(pullModel("acme/Gated-GGUF", { env: envFor(cache) }), personaError("E_AUTH", /gated.*HF_TOKEN/));
    hub.log.length = 0;
    const gated = await pullModel("acme/Gated-GGUF", { env: envFor(cache, { token: "hf_secret" }) });
    assert.deepEqual(await readFile(gated.modelPath), Buffer.from(big.subarray(0, 2000)));
    for (const l of hub.log) assert.equal(l.auth, l.path.startsWith("/cdn/") ? undefined : "Bearer hf_secret", l.path);

    await assert.rejects(pullModel("acme/Missing", { env: envFor(cache) }), personaError("E_NOT_FOUND", /repo not found/));
    await assert.rejects(pullModel("acme/Tiny-GGUF", { env: envFor(cache), revision: "v9" }), personaError("E_NOT_FOUND", /revision not found/));
    hub.corrupt.set("tiny-Q8_0.gguf", Buffer.from(model).fill(1, 0, 10));
    await assert.rejects(pullModel("acme/Tiny-GGUF:Q8_0", { env: envFor(cache) }), personaError("E_BAD_MODEL", /sha256/));
    hub.corrupt.clear();
    assert.equal(existsSync(path.join(cache, "models--acme--Tiny-GGUF", "blobs", `${sha256(model)}.incomplete`)), false);
  });

  test("--model takes hf: references end to end, and says what it tried when nothing matches", async () => {
    const cache = path.join(dir, "cache3");
    const { code, stdout, stderr } = await runCli(["model", "info", "--model", "hf:acme/Tiny-GGUF:Q8_0", "--json"], { HF_HUB_CACHE: cache, HF_ENDPOINT: hub.origin, HF_TOKEN: "" });
    assert.equal(code, 0, stderr);
    const info = JSON.parse(stdout) as { architecture: string; n_layer: number; path: string };
    assert.equal(info.architecture, "llama");
    assert.equal(info.n_layer, 2);
    assert.ok(info.path.startsWith(path.join(cache, "models--acme--Tiny-GGUF", "snapshots")), info.path);
    assert.equal(hubEnv({ HF_HOME: "/h" }).cacheDir, path.join("/h", "hub"));

    await assert.rejects(resolveModelRef("acme/Tiny-GGUF:Q8_0"), personaError("E_NOT_FOUND", /not found: tried a file at .*"demo".*Did you mean hf:acme\/Tiny-GGUF:Q8_0/));
    await assert.rejects(resolveModelRef(dir), personaError("E_BAD_INPUT", /directory.*tiny\.gguf/));
  });
});
