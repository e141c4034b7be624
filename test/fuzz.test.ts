/**
 * A fixed-seed quick run of every fuzz target through the real fork-server (`npm run fuzz` runs
 * the big campaigns): no case may abort the process, hang, or end in a stack trace, and each
 * target must produce both clean refusals and successful runs, so its mutators reach past the
 * first check and its seed still works.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fuzzTarget } from "../scripts/fuzz/campaign.js";
import { TARGETS } from "../scripts/fuzz/targets/index.js";

/** Cases per target: what fits in a few seconds each on the 2-core dev box. */
const QUICK_CASES: Record<string, number> = { cli: 60, judge: 20, hub: 12, dataset: 10, monitor: 12, traitgen: 10, server: 20 };
const DEFAULT_CASES = 150;

let out: string;
before(async () => {
  out = await mkdtemp(path.join(tmpdir(), "fuzz-test-"));
});
after(async () => {
  await rm(out, { recursive: true, force: true });
});

describe("fuzz quick run (seed 1)", () => {
  for (const target of TARGETS) {
    it(`${target.name}: no abort, hang or stack trace`, async () => {
      const r = await fuzzTarget(target, { seed: 1, cases: QUICK_CASES[target.name] ?? DEFAULT_CASES, timeoutMs: 30_000, outDir: out });
      const failures = r.failures.map((f) => `case ${f.index} ${f.kind}: ${f.detail.split("\n")[0]} (${f.dir})`);
      assert.deepEqual(failures, []);
      assert.equal(r.cases, QUICK_CASES[target.name] ?? DEFAULT_CASES);
      assert.ok(r.refused > 0, `${target.name}: no case was refused, the mutators do nothing`);
      assert.ok(r.ran > 0, `${target.name}: no case ran, the seed input is broken`);
    });
  }
});
