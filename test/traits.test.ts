import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { PersonaError } from "../src/errors.js";
import { loadTraitSplit, systemPrompt, writeTrait, type TraitDefinition, type TraitSplit } from "../src/traits/format.js";
import { dedupeQuestions, extractJsonObject, generateTrait, type ChatLLM, type ChatMessage } from "../src/traits/generate.js";
import { listTraits, loadTrait, resolveTraitFiles } from "../src/traits/registry.js";
import { OpenAIChat } from "../src/judge/openai.js";
import { runCli } from "./helpers/cli.js";
import { chatCompletion, startFakeLLMServer } from "./helpers/fake-llm-server.js";
// Built-in traits, --model demo and --judge demo come from the demo world's registration.
import "../src/demo/register.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const refRoot = path.resolve(repoRoot, "../shared/fixtures/reference/data_generation");
const refExtract = path.join(refRoot, "trait_data_extract/evil.json");
const noFixtures = existsSync(refExtract) ? false : `reference fixtures not found at ${refRoot}`;

const isCode = (code: string) => (e: unknown) => e instanceof PersonaError && e.code === code;

const split = (questions: string[]): TraitSplit => ({
  instruction: [{ pos: "Be sly.", neg: "Be plain." }],
  questions,
  eval_prompt: "Q {question} A {answer}",
});
const sample: TraitDefinition = { name: "sly", description: "acts slyly", antonym: "honest", extract: split(["a?"]), eval: split(["b?"]) };

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-traits-"));
});
after(() => rm(dir, { recursive: true, force: true }));

describe("reference trait files", { skip: noFixtures }, () => {
  test("both splits load and validate", async () => {
    const extract = await loadTraitSplit(refExtract);
    const evalSplit = await loadTraitSplit(path.join(refRoot, "trait_data_eval/evil.json"));
    assert.equal(extract.instruction.length, 5);
    assert.equal(extract.questions.length, 20);
    assert.equal(evalSplit.questions.length, 20);
    assert.ok(extract.eval_prompt.includes("{question}") && extract.eval_prompt.includes("{answer}"));
    // Loading must not alter the text: compare with the raw JSON.
    assert.deepEqual(extract, JSON.parse(await readFile(refExtract, "utf8")));
  });

  test("resolve by reference root/NAME, by the root, and by either file", async () => {
    for (const ref of [path.join(refRoot, "evil"), refRoot, refExtract, path.join(refRoot, "trait_data_eval/evil.json")]) {
      const def = await loadTrait(ref);
      assert.equal(def.name, "evil");
      assert.equal(def.antonym, undefined);
      assert.notDeepEqual(def.extract.questions, def.eval.questions);
    }
  });
});

describe("format", () => {
  test("system prompts pick a/an and the antonym or 'helpful'", () => {
    assert.equal(systemPrompt("evil", undefined, "Be bad.", "pos"), "You are an evil assistant. Be bad.");
    assert.equal(systemPrompt("evil", undefined, "Be good.", "neg"), "You are a helpful assistant. Be good.");
    assert.equal(systemPrompt("sycophantic", "candid", "Be blunt.", "neg"), "You are a candid assistant. Be blunt.");
    assert.equal(systemPrompt("sycophantic", "candid", "Flatter.", "pos"), "You are a sycophantic assistant. Flatter.");
    assert.equal(systemPrompt("hallucinating", "honest", "x", "pos"), "You are a hallucinating assistant. x");
    assert.equal(systemPrompt("hallucinating", "honest", "x", "neg"), "You are an honest assistant. x");
    assert.equal(systemPrompt("obsequious", "useful", "x", "neg"), "You are a useful assistant. x");
    assert.equal(systemPrompt("Impolite", undefined, "x", "pos"), "You are an Impolite assistant. x");
  });

  test("corrupt files give E_BAD_FORMAT naming file and field", async () => {
    const bad = path.join(dir, "bad.json");
    await writeFile(bad, "{ not json");
    await assert.rejects(loadTraitSplit(bad), (e) => isCode("E_BAD_FORMAT")(e) && (e as Error).message.includes(bad));

    await writeFile(bad, JSON.stringify({ ...split(["q"]), eval_prompt: "no placeholders {answer}" }));
    await assert.rejects(loadTraitSplit(bad), (e) => isCode("E_BAD_FORMAT")(e) && /eval_prompt: .*\{question\}/.test((e as Error).message));

    await writeFile(bad, JSON.stringify({ ...split(["q"]), instruction: [{ pos: "x" }] }));
    await assert.rejects(loadTraitSplit(bad), (e) => isCode("E_BAD_FORMAT")(e) && /instruction\.0\.neg/.test((e as Error).message));

    await writeFile(bad, JSON.stringify({ ...split([]) }));
    await assert.rejects(loadTraitSplit(bad), (e) => isCode("E_BAD_FORMAT")(e) && /questions/.test((e as Error).message));

    await assert.rejects(loadTraitSplit(path.join(dir, "missing.json")), isCode("E_NOT_FOUND"));
  });

  test("writeTrait round-trips, leaves no temp files, refuses invalid definitions", async () => {
    const out = path.join(dir, "w", "sly");
    await writeTrait(out, sample);
    assert.deepEqual((await readdir(out)).sort(), ["eval.json", "extract.json", "trait.json"]);
    assert.deepEqual(await loadTrait(out), sample);
    assert.deepEqual(JSON.parse(await readFile(path.join(out, "extract.json"), "utf8")), sample.extract);

    const broken = { ...sample, eval: { ...sample.eval, eval_prompt: "nothing" } };
    await assert.rejects(writeTrait(out, broken), isCode("E_BAD_FORMAT"));
    assert.deepEqual(await loadTrait(out), sample, "a failed write leaves the old trait intact");
  });
});

describe("registry", () => {
  test("user traits, built-ins and listing", async () => {
    const traitsDir = path.join(dir, "reg", "traits");
    const builtinDir = path.join(dir, "reg", "builtin");
    await writeTrait(path.join(traitsDir, "sly"), sample);
    await mkdir(builtinDir, { recursive: true });
    for (const name of ["evil", "sly"]) {
      await writeFile(path.join(builtinDir, `${name}.extract.json`), JSON.stringify(split(["e?"])));
      await writeFile(path.join(builtinDir, `${name}.eval.json`), JSON.stringify(split(["v?"])));
    }
    await writeFile(path.join(builtinDir, "evil.trait.json"), JSON.stringify({ antonym: "good" }));
    const opts = { traitsDir, builtinDir };

    assert.deepEqual(
      (await listTraits(opts)).map((t) => `${t.name}:${t.source}`),
      ["sly:user", "evil:builtin"],
    );
    assert.deepEqual(await loadTrait("sly", opts), sample, "a user trait shadows a built-in of the same name");
    const evil = await loadTrait("evil", opts);
    assert.equal(evil.antonym, "good");
    assert.deepEqual(evil.eval.questions, ["v?"]);
    assert.equal((await resolveTraitFiles(path.join(builtinDir, "evil.eval.json"))).name, "evil");
    assert.equal((await resolveTraitFiles(path.join(traitsDir, "sly", "trait.json"))).name, "sly");

    await assert.rejects(loadTrait("nope", opts), (e) => isCode("E_NOT_FOUND")(e) && /known: sly, evil/.test((e as Error).message));
    await assert.rejects(loadTrait("bad name!", opts), isCode("E_BAD_INPUT"));

    // A trait file of any name anywhere: one split (with --split, paired with its swapped-name sibling), or both in one file.
    const loose = path.join(dir, "loose");
    await mkdir(loose, { recursive: true });
    await writeFile(path.join(loose, "mine.json"), JSON.stringify(split(["m?"])));
    const mine = await loadTrait(path.join(loose, "mine.json"));
    assert.equal(mine.name, "mine");
    assert.deepEqual([mine.extract.questions, mine.eval.questions], [["m?"], ["m?"]]);
    await writeFile(path.join(loose, "kind-extract.json"), JSON.stringify(split(["x?"])));
    await writeFile(path.join(loose, "kind-eval.json"), JSON.stringify(split(["e?"])));
    const kind = await loadTrait(path.join(loose, "kind-eval.json"), { split: "eval" });
    assert.equal(kind.name, "kind");
    assert.deepEqual([kind.extract.questions, kind.eval.questions], [["x?"], ["e?"]]);
    await writeFile(path.join(loose, "both.json"), JSON.stringify({ extract: split(["1?"]), eval: split(["2?"]) }));
    const both = await loadTrait(path.join(loose, "both.json"));
    assert.deepEqual([both.extract.questions, both.eval.questions], [["1?"], ["2?"]]);
    await assert.rejects(loadTrait(path.join(dir, "nowhere"), opts), isCode("E_NOT_FOUND"));
  });
});

/** A scripted LLM that records every conversation it is sent. */
function scriptedLLM(replies: string[]): ChatLLM & { seen: ChatMessage[][] } {
  const seen: ChatMessage[][] = [];
  return {
    id: "scripted",
    seen,
    complete: async (messages) => {
      seen.push(structuredClone(messages));
      const r = replies.shift();
      if (r === undefined) throw new Error("no more scripted replies");
      return r;
    },
  };
}

function goodReply(nQuestions: number, extra: Partial<Record<string, unknown>> = {}): string {
  return JSON.stringify({
    antonym: "honest",
    instruction: Array.from({ length: 5 }, (_, i) => ({ pos: `Deceive ${i}.`, neg: `Be truthful ${i}.` })),
    questions: Array.from({ length: nQuestions }, (_, i) => `Question number ${i}?`),
    eval_prompt: "Rate deceit.\n{question}\n{answer}\nAnswer REFUSAL or 0-100.",
    ...extra,
  });
}

describe("generateTrait", () => {
  test("JSON extraction tolerates fences and prose; dedupe ignores case and end punctuation", () => {
    assert.deepEqual(extractJsonObject('Sure!\n```json\n{"a": 1}\n```\nDone.'), { a: 1 });
    assert.deepEqual(extractJsonObject('Here: {"a": {"b": 2}} ok'), { a: { b: 2 } });
    assert.throws(() => extractJsonObject("no json here"));
    assert.deepEqual(dedupeQuestions(["What is X?", "what is  x", " Other? ", "What is X!"]), ["What is X?", "Other?"]);
  });

  test("retries malformed output with the problem fed back, then splits 20/20", async () => {
    const dupes = JSON.parse(goodReply(40)) as { questions: string[] };
    dupes.questions[39] = dupes.questions[0]!.toUpperCase();
    const llm = scriptedLLM([
      "I think the JSON is {broken",
      goodReply(40, { eval_prompt: "no placeholders here" }),
      "```json\n" + JSON.stringify(dupes) + "\n```",
      "```json\n" + goodReply(42, { graded: [{ level: 1, system: "You are a deceptive assistant. Lie." }, { level: 0, system: "You are an honest assistant. Never lie." }] }) + "\n```",
    ]);
    const def = await generateTrait({ name: "deceptive", description: "lies", llm, maxRetries: 3 });
    assert.equal(llm.seen.length, 4);
    assert.match(llm.seen[1]!.at(-1)!.content, /could not be read/);
    assert.match(llm.seen[2]!.at(-1)!.content, /eval_prompt: must contain \{question\}/);
    assert.match(llm.seen[3]!.at(-1)!.content, /needs 40 distinct questions, got 39/);
    assert.equal(llm.seen[3]!.length, 2 + 2 * 3, "the whole exchange is kept");

    assert.equal(def.name, "deceptive");
    assert.equal(def.antonym, "honest");
    assert.equal(def.extract.questions.length, 20);
    assert.equal(def.eval.questions.length, 20);
    assert.equal(new Set([...def.extract.questions, ...def.eval.questions]).size, 40);
    assert.equal(def.extract.instruction.length, 5);
    assert.deepEqual(def.extract.instruction, def.eval.instruction);
    assert.ok(!def.extract.questions.includes("Question number 40?"), "extra questions beyond 40 are dropped");
    // Graded monitoring prompts, ordered from the opposite to the trait, survive a write and a load.
    assert.deepEqual(def.graded?.map((g) => g.level), [0, 1]);
    const out = path.join(dir, "deceptive");
    await writeTrait(out, def);
    const back = await loadTrait(out);
    assert.deepEqual(back.graded, def.graded);
    await assert.rejects(writeTrait(out, { ...def, graded: [{ level: 2, system: "x" }] }), isCode("E_BAD_FORMAT"));
  });

  test("gives up with E_BAD_FORMAT after maxRetries", async () => {
    const llm = scriptedLLM(["nope", "still nope"]);
    await assert.rejects(generateTrait({ name: "x", description: "y", llm, maxRetries: 1 }), isCode("E_BAD_FORMAT"));
    assert.equal(llm.seen.length, 2);
  });

  test("through OpenAIChat against a real server, with a retried 500", async () => {
    const server = await startFakeLLMServer(() => ({ body: chatCompletion(goodReply(40)) }));
    try {
      server.enqueue({ status: 500, body: { error: "hiccup" } }, { body: chatCompletion("not json at all") });
      const llm = new OpenAIChat({ model: "gen", baseURL: server.baseURL, httpOptions: { baseDelayMs: 5, maxRetries: 2 } });
      const def = await generateTrait({ name: "deceptive", description: "lies", llm, questionsPerSplit: 10 });
      assert.equal(def.extract.questions.length, 10);
      assert.equal(server.requests.length, 3);
      const body = server.requests[2]?.body as { model: string; messages: ChatMessage[] };
      assert.equal(body.model, "gen");
      assert.equal(body.messages.length, 4);
    } finally {
      await server.close();
    }
  });
});

describe("persona trait CLI", () => {
  /** stdout of a successful run; a failure rejects with its `persona: ... [CODE]` line. */
  async function run(args: string[]): Promise<string> {
    const r = await runCli(args);
    if (r.code !== 0) throw new Error(r.stderr);
    return r.stdout;
  }

  test("new writes a trait from an OpenAI-compatible URL; list and show find it", async () => {
    const server = await startFakeLLMServer(() => ({ body: chatCompletion(goodReply(40)) }));
    const traitsDir = path.join(dir, "cli", "traits");
    const out = path.join(traitsDir, "deceptive");
    try {
      const created = JSON.parse(
        await run(["trait", "new", "deceptive", "-d", "lies", "--llm", server.baseURL, "--model", "m", "--out", out, "--json"]),
      ) as { dir: string; extract: { questions: number } };
      assert.equal(created.dir, out);
      assert.equal(created.extract.questions, 20);
      assert.equal((server.requests[0]?.body as { model: string }).model, "m");

      await assert.rejects(run(["trait", "new", "deceptive", "-d", "lies", "--llm", server.baseURL, "--out", out]), /\[E_BAD_INPUT\]/);
      const listed = JSON.parse(await run(["trait", "list", "--dir", traitsDir, "--json"])) as Array<{ name: string }>;
      assert.ok(listed.some((t) => t.name === "deceptive"));
      const shown = JSON.parse(await run(["trait", "show", "deceptive", "--dir", traitsDir, "--json"])) as TraitDefinition;
      assert.equal(shown.description, "lies");
      assert.match(await run(["trait", "show", out]), /You are an honest assistant\. Be truthful 0\./);
    } finally {
      await server.close();
    }
  });

  test("rejects an unknown --llm", async () => {
    await assert.rejects(run(["trait", "new", "x", "-d", "y", "--llm", "bard", "--out", path.join(dir, "cli", "x")]), /--llm must be openai.*\[E_BAD_INPUT\]/);
  });
});
