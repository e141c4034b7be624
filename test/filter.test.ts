import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { parseCsv, parseCsvRecords } from "../src/pipeline/csv.js";
import { filterPairs, type ScoredRow } from "../src/pipeline/filter.js";
import { personaError } from "./helpers/errors.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outDir = path.resolve(repoRoot, "../shared/fixtures/reference/output");
const posCsv = path.join(outDir, "qwen3-4b_evil_pos.csv");
const negCsv = path.join(outDir, "qwen3-4b_evil_neg.csv");
const noFixtures = existsSync(posCsv) && existsSync(negCsv) ? false : `reference rollouts not found in ${outDir}`;

const row = (trait: number | null, coherence: number | null): ScoredRow => ({ trait, coherence });

describe("parseCsv", () => {
  test("quoted commas, doubled quotes, newlines and CRLF", () => {
    const text = 'a,b,c\r\n1,"x, y","say ""hi"""\n2,"line1\nline2",\n3,,"\r\nz"\n';
    assert.deepEqual(parseCsv(text), [
      ["a", "b", "c"],
      ["1", "x, y", 'say "hi"'],
      ["2", "line1\nline2", ""],
      ["3", "", "\r\nz"],
    ]);
    assert.deepEqual(parseCsv("a,b\n1,2"), [
      ["a", "b"],
      ["1", "2"],
    ]);
    assert.deepEqual(parseCsvRecords("\ufeffk,v\n1,\n"), [{ k: "1", v: "" }]);
  });

  test("rejects an unterminated quote and ragged rows", () => {
    assert.throws(() => parseCsv('a\n"open'), personaError("E_BAD_FORMAT"));
    assert.throws(() => parseCsvRecords("a,b\n1\n"), personaError("E_BAD_FORMAT"));
  });
});

describe("filterPairs", () => {
  test("keeps pos ≥ thr, neg < thr, both coherent; counts first reasons", () => {
    const pos = [row(50, 50), row(49.9, 90), row(90, 90), row(90, 49), row(90, null), row(80, 80)];
    const neg = [row(49.9, 50), row(0, 90), row(50, 90), row(0, 90), row(0, 90), row(10, 20)];
    const r = filterPairs(pos, neg);
    assert.deepEqual(r.kept, [0]);
    assert.deepEqual(r.counts, { total: 6, kept: 1, dropped: 5, nullScore: 1, posTraitLow: 1, negTraitHigh: 1, incoherent: 2 });
  });

  test("thresholds are configurable", () => {
    const pos = [row(70, 40), row(60, 90)];
    const neg = [row(65, 40), row(10, 90)];
    assert.deepEqual(filterPairs(pos, neg, { traitThreshold: 70, coherenceThreshold: 30 }).kept, [0]);
    assert.deepEqual(filterPairs(pos, neg, { traitThreshold: 70 }).kept, []);
  });

  test("rows must align", () => {
    assert.throws(() => filterPairs([row(1, 1)], []), personaError("E_BAD_INPUT"));
  });
});

describe("reference rollouts (qwen3-4b, evil)", { skip: noFixtures }, () => {
  test("filter matches a direct computation of the reference rule", async () => {
    const [pos, neg] = await Promise.all([posCsv, negCsv].map(async (f) => parseCsvRecords(await readFile(f, "utf8"))));
    assert.ok(pos && neg);
    assert.deepEqual(Object.keys(pos[0] ?? {}), ["question", "prompt", "answer", "question_id", "evil", "coherence"]);
    assert.equal(pos.length, neg.length);
    assert.ok(pos.length > 100);
    // Multi-line answers were parsed as single fields: every row's prompt is a chat-templated system prompt.
    assert.ok(pos.every((r) => r.prompt?.includes("<|im_start|>system")));

    const score = (v: string | undefined): number | null => (v === undefined || v.trim() === "" ? null : Number(v));
    const scored = (rows: Record<string, string>[]) => rows.map((r) => row(score(r.evil), score(r.coherence)));
    const result = filterPairs(scored(pos), scored(neg));

    // The rule written out again, straight from the CSV strings (spec §2).
    const expected: number[] = [];
    for (let i = 0; i < pos.length; i++) {
      const p = pos[i]!;
      const n = neg[i]!;
      const cells = [p.evil, p.coherence, n.evil, n.coherence];
      if (cells.some((c) => !c)) continue;
      const [pe, pc, ne, nc] = cells.map(Number) as [number, number, number, number];
      if (pe >= 50 && ne < 50 && pc >= 50 && nc >= 50) expected.push(i);
    }
    assert.deepEqual(result.kept, expected);
    assert.equal(result.counts.kept + result.counts.dropped, pos.length);
    // Python's csv module over the same files, with the same rule, keeps 457 of 500.
    assert.equal(result.counts.kept, 457);
    // Aligned rows share their question.
    for (const i of result.kept) {
      assert.equal(pos[i]?.question, neg[i]?.question);
      assert.equal(pos[i]?.question_id?.replace("_pos_", "_neg_"), neg[i]?.question_id);
    }
  });
});
