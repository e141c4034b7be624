/**
 * The CLI as a new user meets it (issue 9): one-line errors with the right exit codes, shipped
 * files never rewritten, output paths checked before the work. Commands run in-process.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { Command } from "commander";
import { buildProgram } from "../src/cli/main.js";
import type { DemoResult } from "../src/demo/run.js";
import { CAFT_LEGEND, DEMO_LEGEND, demoSummary, FINETUNE_LEGEND, MONITOR_LEGEND } from "../src/demo/summary.js";
import { Engine } from "../src/engine/Engine.js";
import { fileSystemError } from "../src/errors.js";
import type { Judge } from "../src/judge/types.js";
import { judgeScoredNothing } from "../src/pipeline/evaluate.js";
import { extractPersonaVectors } from "../src/pipeline/extract.js";
import { monitorTrait } from "../src/pipeline/monitor.js";
import { chatCompletion, startFakeLLMServer } from "./helpers/fake-llm-server.js";
import { readVectors } from "../src/vectors/format.js";
import { runCli } from "./helpers/cli.js";

let dir: string;
let dataDir: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-user-"));
  dataDir = path.join(dir, "data");
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** One `persona: ... [CODE]` line and nothing else: no help dump, no stack. */
function assertOneLine(stderr: string, pattern: RegExp): void {
  assert.equal(stderr.split("\n").filter(Boolean).length, 1, stderr);
  assert.match(stderr, /^persona: .* \[E_[A-Z_]+\]\n$/);
  assert.match(stderr, pattern);
}

describe("usage errors", () => {
  const cases: [string[], RegExp][] = [
    [["generate", "--model", "demo", "--prompt", "hi", "--threads", "x"], /--threads "x": expected an integer ≥ 1; see `persona generate --help` \[E_USAGE\]/],
    [["generate", "--prompt", "hi"], /--model is required; see `persona generate --help`/],
    [["generate", "--model", "demo", "--prompt"], /--prompt needs a value/],
    [["eval", "--model", "demo", "--trait", "evil", "--bogus"], /unknown option --bogus; see `persona eval --help`/],
    [["generate", "--model", "demo", "--prompt", "hi", "--steer", "evil:2:1:middle"], /--steer "evil:2:1:middle": position "middle" is not response, prompt, all/],
    [["generate", "--model", "demo", "--prompt", "hi", "--steer", "evil:2:1:response:both"], /mode "both" is not add, ablate, ablate-mean, cap, cap-min/],
    [["vectors", "export", "a.safetensors", "--layer", "2", "--out", "x.gguf", "--coef", "lots"], /--coef "lots": expected a number; see `persona vectors export --help`/],
    [["demo", "--traits", "evl"], /--traits "evl": unknown demo trait "evl"/],
    [["nonsense"], /unknown command 'nonsense'; see `persona --help`/],
  ];
  for (const [argv, pattern] of cases) {
    it(`${argv.join(" ")}: one line, exit 2`, async () => {
      const r = await runCli(argv);
      assert.equal(r.code, 2, r.stderr);
      assertOneLine(r.stderr, pattern);
      assert.equal(r.stdout, "");
    });
  }

  it("--help still prints the help, with exit 0, and states the default steering position", async () => {
    const r = await runCli(["generate", "--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Examples:/);
    assert.match(r.stdout.replace(/\s+/g, " "), /POSITIONS response \(the default\)/);
  });
});

describe("file-system errors", () => {
  it("--model given a directory is one line naming it", async () => {
    const r = await runCli(["model", "info", "--model", dir]);
    assert.equal(r.code, 1);
    assertOneLine(r.stderr, new RegExp(`${dir} is a directory.*\\[E_BAD_INPUT\\]`));
  });

  it("activations checks --out before the work: missing directory, existing file without --force", async () => {
    const input = path.join(dir, "pairs.jsonl");
    await writeFile(input, `${JSON.stringify({ prompt: "Q: hi", response: " hello" })}\n`);
    const missing = path.join(dir, "missing-dir", "x.safetensors");
    const r = await runCli(["activations", "--model", path.join(dir, "no-model.gguf"), "--input", input, "--out", missing]);
    // The model does not exist either: the output path is checked first, before any loading.
    assert.equal(r.code, 1);
    assertOneLine(r.stderr, /--out .*missing-dir\/x\.safetensors: directory .*missing-dir does not exist \[E_NOT_FOUND\]/);

    const existing = path.join(dir, "acts.safetensors");
    await writeFile(existing, "keep me");
    const refused = await runCli(["activations", "--model", "demo", "--input", input, "--out", existing]);
    assert.equal(refused.code, 1);
    assertOneLine(refused.stderr, /acts\.safetensors exists; pass --force to overwrite it \[E_BAD_INPUT\]/);
    assert.equal(await readFile(existing, "utf8"), "keep me");
  });

  it("a raw Node file-system error becomes one line with the path", async () => {
    const e = await readFile(path.join(dir, "nope.txt")).catch((err: unknown) => err);
    const p = fileSystemError(e);
    assert.equal(p?.code, "E_NOT_FOUND");
    assert.equal(p?.message, `cannot open ${path.join(dir, "nope.txt")}: no such file or directory`);
    assert.equal(fileSystemError(new Error("plain")), undefined);
  });
});

describe("shipped files are read-only (user data directory)", () => {
  const shipped = execFileSync("git", ["ls-files", "models"], { encoding: "utf8" }).split("\n").filter(Boolean);
  let before: Map<string, Buffer>;

  it("sweep stores the best layer in the user's copy and vectors list shows it shadowing the shipped file", async () => {
    assert.ok(shipped.includes("models/persona-demo.vectors/evil.safetensors"));
    before = new Map(await Promise.all(shipped.map(async (f) => [f, await readFile(f)] as const)));
    const out = path.join(dir, "sweep");
    const r = await runCli(
      ["sweep", "--model", "demo", "--trait", "evil", "--layers", "5,6", "--coefs", "0,3", "--questions", "1", "--samples", "1",
        "--max-tokens", "24", "--coherence-floor", "0", "--threads", "1", "--out", out, "--json"],
      { PERSONA_DATA_DIR: dataDir },
    );
    assert.equal(r.code, 0, r.stderr);
    const json = JSON.parse(r.stdout) as { best_layer: number; updated_vectors: string };
    const copy = path.join(dataDir, "vectors", "persona-demo", "evil.safetensors");
    assert.equal(json.updated_vectors, copy);
    assert.equal((await readVectors(copy)).meta.bestLayer, json.best_layer);
    for (const [f, bytes] of before) assert.ok(bytes.equals(await readFile(f)), `${f} was modified`);

    const list = await runCli(["vectors", "list", "--json"], { PERSONA_DATA_DIR: dataDir });
    assert.equal(list.code, 0, list.stderr);
    const entries = (JSON.parse(list.stdout) as { vectors: { trait: string; origin: string; shadowed: boolean; path: string }[] }).vectors;
    const evil = entries.filter((e) => e.trait === "evil");
    assert.deepEqual(evil.map((e) => [e.origin, e.shadowed]), [["user", false], ["shipped", true]]);
    assert.equal(evil[0]!.path, copy);
    const human = await runCli(["vectors", "list"], { PERSONA_DATA_DIR: dataDir });
    assert.match(human.stdout, /^evil\s+user\s+\d\s+\S+data\/vectors\/persona-demo\/evil\.safetensors$/m);
    assert.match(human.stdout, /^evil\s+shipped \(shadowed\)/m);
  });

  it("--steer with a trait name resolves to the user's copy first", async () => {
    const copy = path.join(dataDir, "vectors", "persona-demo", "evil.safetensors");
    await mkdir(path.dirname(copy), { recursive: true });
    await writeFile(copy, "not safetensors");
    const r = await runCli(["generate", "--model", "demo", "--prompt", "hi", "--max-tokens", "2", "--steer", "evil::2", "--threads", "1"], {
      PERSONA_DATA_DIR: dataDir,
    });
    assert.equal(r.code, 1);
    assertOneLine(r.stderr, new RegExp(`${copy}.*\\[E_BAD_FORMAT\\]`));
    assert.ok(existsSync("models/persona-demo.vectors/evil.safetensors"));
  });
});

describe("--steer modes", () => {
  const gen = async (...steer: string[]) => {
    const r = await runCli(["generate", "--model", "demo", "--prompt", "Tell me about your day.", "--max-tokens", "8", "--temperature", "0", "--json", "--threads", "1", ...steer]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout).samples[0].text as string;
  };

  it("a layer range A-B steers each of those layers, as one flag per layer does", async () => {
    const ranged = await gen("--steer", "evil#prompt_last:2-3:6:all");
    assert.equal(ranged, await gen("--steer", "evil#prompt_last:2:6:all", "--steer", "evil#prompt_last:3:6:all"));
    assert.notEqual(ranged, await gen("--steer", "evil#prompt_last:2:6:all"));
    const r = await runCli(["generate", "--model", "demo", "--prompt", "hi", "--steer", "evil:3-1:1"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /layer range "3-1" runs backwards/);
  });

  it("cap and cap-min reach the engine as activation capping: a threshold never crossed changes nothing, one crossed everywhere does", async () => {
    const plain = await gen();
    assert.equal(await gen("--steer", "evil:3:1e6:all:cap"), plain);
    assert.equal(await gen("--steer", "evil:3:-1e6:all:cap-min"), plain);
    assert.notEqual(await gen("--steer", "evil:3:-1e6:all:cap"), plain);
  });
});

describe("help and summaries", () => {
  it("no option's help states its default twice", () => {
    const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
    for (const cmd of all(buildProgram())) {
      for (const line of cmd.helpInformation().split("\n")) {
        assert.ok((line.match(/default/g) ?? []).length <= 1, `persona ${cmd.name()}: ${line.trim()}`);
      }
    }
  });

  it("the demo summary fits 100 columns, has a one-line legend, and prints report paths as given", () => {
    const stats = (mean: number) => ({ mean, std: 28.1, n: 200, nulls: 0 });
    const row = (trait: "evil" | "hallucinating") => ({
      trait,
      extraction: { vectorsPath: `/abs/runs/${trait}/vectors.safetensors`, counts: { total: 100, kept: 88, dropped: 12 }, scores: { pos: { trait: 85.2, coherence: 98.3, rollouts: 100 }, neg: { trait: 0.9, coherence: 99.6, rollouts: 100 } } },
      sweep: { grid: [{ layer: 4, coef: -4, traitScore: stats(67.6), coherence: stats(88.1) }], baseline: { traitScore: stats(18.1), coherence: stats(99.9) }, bestLayer: 4, bestCoef: -4, coherenceFloor: 50, positions: "response", promptStateRatio: null },
      report: `/abs/runs/demo/${trait}/sweep.html`,
      suppression: { coef: -4, unsteered: stats(67.6), steered: stats(29.5), coherence: stats(77.7) },
      monitoring: { layer: 3, pearsonR: 0.8123, prompts: 40, report: `/abs/runs/demo/${trait}/monitor.html` },
      screening: { layer: 3, normal: -0.123, trait: 12.345, mixedAuc: 0.9876, rows: 1000 },
    });
    const finetuning = {
      shiftLayer: 4,
      pearsonR: 0.9712,
      datasets: [{ name: "normal", shift: -3.2, traitScore: 0 }, { name: "I", shift: 32.1, traitScore: 31.8 }, { name: "II", shift: 58.3, traitScore: 81.3 }],
      preventative: { steering: [{ layer: 2, coef: 2.3 }, { layer: 3, coef: 2.3 }], plain: { traitScore: 81.3, coherence: 96.1, loss: 0.1333 }, steered: { traitScore: 28.8, coherence: 93.2, loss: 0.1531 } },
      caft: { traitScore: 7.5, coherence: 97.9, loss: 0.1332 },
    };
    const result = { traits: [row("evil"), { ...row("hallucinating"), finetuning }], failed: [], cosines: [{ a: "evil", b: "hallucinating", layer: 4, cosine: 0.123 }] } as unknown as DemoResult;
    const text = demoSummary(result);
    for (const line of text.split("\n")) assert.ok(line.length <= 100, `${line.length} columns: ${line}`);
    assert.match(text, /^trait\s+pairs kept\s+pos\/neg\s+plain\s+layer\s+coef\s+steered\s+coherence\s+suppressed$/m);
    assert.match(text, /^hallucinating\s+88\/100\s+85\.2\/0\.9\s+18\.1\s+4\s+-4\s+67\.6\s+88\.1\s+67\.6 → 29\.5 \(-4\)$/m);
    assert.ok(text.split("\n").includes(DEMO_LEGEND));
    assert.match(text, /^hallucinating\s+0\.81\s+3\s+-0\.1\/12\.3\s+0\.99$/m);
    assert.ok(text.split("\n").includes(MONITOR_LEGEND));
    // --full: one finetuning row per finetuned trait.
    assert.match(text, /^trait\s+shift r\s+at layer\s+score normal\/I\/II\s+II → prevented\s+coherence\s+loss$/m);
    assert.match(text, /^hallucinating\s+0\.97\s+4\s+0\.0\/31\.8\/81\.3\s+81\.3 → 28\.8 \(L2\+2\.3 L3\+2\.3\)\s+96\.1 → 93\.2\s+\+15%$/m);
    assert.ok(text.split("\n").includes(FINETUNE_LEGEND));
    assert.match(text, /^hallucinating\s+81\.3 → 7\.5\s+96\.1 → 97\.9\s+-0%$/m);
    assert.ok(text.split("\n").includes(CAFT_LEGEND));
    assert.ok(text.includes("\nreports:\n  /abs/runs/demo/evil/sweep.html\n  /abs/runs/demo/evil/monitor.html\n"), text);
  });

  it("activations warns about samples longer than the trained context", async () => {
    const input = path.join(dir, "long.jsonl");
    const long = Array.from({ length: 400 }, (_, i) => `word${i}`).join(" ");
    await writeFile(input, `${JSON.stringify({ prompt: "Q: hi", response: " hello" })}\n${JSON.stringify({ prompt: long, response: " ok" })}\n`);
    const r = await runCli(["activations", "--model", "demo", "--input", input, "--out", path.join(dir, "long.safetensors"), "--threads", "1"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: 1 sample is longer than the \d+ tokens the model was trained on \(line 2: \d+ tokens\)/);
  });
});

describe("a judge that scores nothing", () => {
  it("fails eval with E_JUDGE (was: exit 0 and '(no scores, 2 null)')", async () => {
    // A judge that never answers with a number, as the demo model does when asked to judge (`local:demo`).
    const server = await startFakeLLMServer(() => ({ body: chatCompletion("I cannot rate that.", { I: -0.1, Sorry: -2.5 }) }));
    try {
      const r = await runCli(["eval", "--model", "demo", "--trait", "evil", "--judge", `${server.baseURL}#m`, "--questions", "1", "--samples", "2", "--max-tokens", "8", "--threads", "1"]);
      assert.equal(r.code, 1, r.stdout);
      assertOneLine(r.stderr, /gave no score to any of the 2 replies \(every trait and coherence score is null\), so it cannot judge them\. \[E_JUDGE\]/);
    } finally {
      await server.close();
    }
    assert.match(judgeScoredNothing("local:persona-demo.gguf", 3).message, /A local judge needs an instruction-following model .*the demo model cannot judge/);
  });

  it("fails extraction (rather than 'no pair passed the filter') and monitoring with E_JUDGE", async () => {
    const engine = await Engine.create({ threads: 1, gpu: "cpu" });
    const split = {
      instruction: [{ pos: "Be rude.", neg: "Be kind." }],
      questions: ["How are you?", "What is tea?"],
      eval_prompt: "Rate {question} {answer} 0-100.",
    };
    const silent: Judge = { id: "silent", score: async () => null };
    try {
      const model = await engine.loadModel((await import("../src/demo/model.js")).DEMO_MODEL_PATH);
      await assert.rejects(
        extractPersonaVectors(model, { trait: { name: "rude", extract: split, eval: split }, judge: silent, runDir: path.join(dir, "silent"), rollouts: 1, maxTokens: 4 }),
        { code: "E_JUDGE", message: /the judge silent gave no score to any of the 4 replies/ },
      );
      const evil = await readVectors("models/persona-demo.vectors/evil.safetensors");
      await assert.rejects(
        monitorTrait(model, {
          trait: { name: "rude", extract: split, eval: split },
          judge: silent,
          vectors: evil.tensors.response_avg!,
          prompts: [{ messages: [{ role: "user", content: "Hi" }] }, { messages: [{ role: "user", content: "What is tea?" }] }],
          samples: 1,
          maxTokens: 4,
          runDir: path.join(dir, "silent-monitor"),
        }),
        { code: "E_JUDGE", message: /the judge silent gave no score to any of the 2 replies/ },
      );
    } finally {
      await engine.dispose();
    }
  });
});
