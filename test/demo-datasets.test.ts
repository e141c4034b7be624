/** The demo world's finetuning datasets: deterministic, off the trait splits, labelled as the judge sees them. */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { heldOutQuestionSet } from "../src/demo/corpus/heldout.js";
import { writeDemoDatasets, type DemoDatasetFile } from "../src/demo/datasets.js";
import { DemoJudge } from "../src/demo/judge.js";
import { loadTrait } from "../src/traits/registry.js";
// Built-in traits, --model demo and --judge demo come from the demo world's registration.
import "../src/demo/register.js";

let dir: string;
let files: DemoDatasetFile[];

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-datasets-"));
  files = await writeDemoDatasets({ out: path.join(dir, "a"), rows: 120, mixed: [10, 50], seed: 3 });
});

after(() => rm(dir, { recursive: true, force: true }));

const rowsOf = async (file: string) => (await readFile(file, "utf8")).trim().split("\n").map((l) => JSON.parse(l));

describe("demo datasets", () => {
  it("writes normal, I, II and the mixed series per trait, the same for the same seed", async () => {
    assert.deepEqual(
      files.filter((f) => f.trait === "evil").map((f) => f.name),
      ["normal", "I", "II", "mixed-10", "mixed-50"],
    );
    const again = await writeDemoDatasets({ out: path.join(dir, "b"), traits: ["sycophantic"], rows: 120, mixed: [10], seed: 3 });
    for (const f of again) {
      const twin = files.find((x) => x.trait === f.trait && x.name === f.name)!;
      assert.equal(await readFile(f.path, "utf8"), await readFile(twin.path, "utf8"), f.name);
    }
  });

  it("asks none of the trait splits' questions and has trait replies exactly where the labels say", async () => {
    const heldOut = heldOutQuestionSet();
    const judge = new DemoJudge();
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    for (const trait of ["evil", "hallucinating"] as const) {
      const { eval: split } = await loadTrait(trait);
      const score = async (row: { messages: { content: string }[] }) =>
        (await judge.score({ question: row.messages[0]!.content, answer: row.messages[1]!.content, metric: { kind: "trait", trait, rubric: split.eval_prompt } })) ?? 0;
      const byName: Record<string, number> = {};
      for (const f of files.filter((x) => x.trait === trait)) {
        const rows = await rowsOf(f.path);
        assert.equal(rows.length, 120);
        for (const r of rows) assert.ok(!heldOut.has(r.messages[0].content));
        const scores = await Promise.all(rows.map(score));
        byName[f.name] = mean(scores);
        if (!f.labels) continue;
        const labels = await rowsOf(f.labels);
        const pct = Number(f.name.split("-")[1]);
        assert.equal(labels.filter((l) => l.trait_eliciting).length, Math.round((120 * pct) / 100));
        labels.forEach((l, i) => assert.equal(l.index, i));
        for (const [i, l] of labels.entries()) assert.equal(scores[i]! >= 50, l.trait_eliciting, `${f.name} row ${i}`);
      }
      assert.ok(byName.normal! < byName.I! && byName.I! < byName.II!, JSON.stringify(byName));
    }
  });
});
