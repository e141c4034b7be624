import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, test } from "node:test";
import {
  ARTIFACT_PAIRS,
  buildTraitArtifact,
  corpusStats,
  generateCorpus,
  gradedSystemPrompts,
  renderPromptText,
  renderTrainingText,
  type DemoChat,
} from "../src/demo/corpus.js";
import { REPLY_ROOTS, RULES, TRAIT_KIND, replyLexicon } from "../src/demo/corpus/grammar.js";
import { ENTITY_NAMES } from "../src/demo/corpus/entities.js";
import { heldOutQuestions, heldOutQuestionSet, HELDOUT_PER_SPLIT } from "../src/demo/corpus/heldout.js";
import { bigramKey } from "../src/demo/corpus/lexicon.js";
import { INSTRUCTIONS } from "../src/demo/corpus/prompts.js";
import { Rng } from "../src/demo/corpus/rng.js";
import { expandRule } from "../src/demo/corpus/template.js";
import { STOP, wordTokens } from "../src/demo/corpus/tokens.js";
import { scoreAll, traitScore } from "../src/demo/judge.js";
import { DEMO_ANTONYMS, DEMO_TRAITS, demoTraitMetaPath, demoTraitPath, loadDemoTrait, type DemoTrait } from "../src/demo/traits.js";
import { parseTraitSplit } from "../src/traits/format.js";

const sample = (seed: number, n: number): DemoChat[] => [...generateCorpus({ seed, nConversations: n })];
const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const CHATS = sample(2024, 4000);

describe("generateCorpus", () => {
  test("is deterministic per seed and differs across seeds", () => {
    assert.deepEqual(sample(5, 300), sample(5, 300));
    const a = sample(5, 300).map(renderTrainingText);
    const b = sample(6, 300).map(renderTrainingText);
    assert.ok(a.filter((t, i) => t !== b[i]).length > 250);
  });

  test("rejects a bad conversation count", () => {
    assert.throws(() => [...generateCorpus({ seed: 1, nConversations: -1 })], /nConversations/);
  });

  test("conversations are mostly distinct, replies short, system prompts in the spec's form", () => {
    const stats = corpusStats(CHATS);
    assert.ok(stats.distinct / stats.conversations > 0.9, `distinct ${stats.distinct}`);
    assert.ok(stats.meanReplyChars > 60 && stats.meanReplyChars < 250, `mean reply ${stats.meanReplyChars}`);
    assert.ok(stats.lexiconSize > 400 && stats.lexiconSize < 2500, `lexicon ${stats.lexiconSize}`);
    for (const c of CHATS) {
      if (c.system !== undefined) assert.match(c.system, /^You are an? [a-z ]+ assistant\. \S/);
      assert.ok(c.split === "train" || c.split === "valid");
      assert.ok(c.user.length > 0 && c.assistant.length > 0);
    }
    assert.ok(CHATS.some((c) => c.split === "valid") && CHATS.some((c) => c.system === undefined));
  });

  test("renders ChatML, omitting the system block when absent", () => {
    const chat = { system: "You are a helpful assistant. Be brief.", user: "Hi?", assistant: "Hello." };
    assert.equal(
      renderTrainingText(chat),
      "<|im_start|>system\nYou are a helpful assistant. Be brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n",
    );
    assert.equal(renderTrainingText({ user: "Hi?", assistant: "Hello." }), "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n");
    assert.ok(renderTrainingText(chat).startsWith(renderPromptText(chat)));
  });
});

describe("held-out questions", () => {
  test("each trait has 20 extraction and 20 evaluation questions, all distinct", () => {
    for (const t of DEMO_TRAITS) {
      const { extract, eval: ev } = heldOutQuestions(t);
      assert.equal(extract.length, HELDOUT_PER_SPLIT);
      assert.equal(ev.length, HELDOUT_PER_SPLIT);
      assert.equal(new Set([...extract, ...ev]).size, 2 * HELDOUT_PER_SPLIT);
    }
  });

  test("never appear in training conversations, nor do held-out entity names", () => {
    const held = heldOutQuestionSet();
    const names = new RegExp(`\\b(${ENTITY_NAMES.heldout.join("|")})\\b`);
    for (const c of sample(77, 20000)) {
      assert.ok(!held.has(c.user), `held-out question in training: ${c.user}`);
      assert.doesNotMatch(renderTrainingText(c), names);
    }
  });

  test("are questions the grammar could ask, in words training questions use", () => {
    const trainWords = new Set(CHATS.flatMap((c) => wordTokens(c.user)));
    for (const t of DEMO_TRAITS) {
      for (const q of [...heldOutQuestions(t).extract, ...heldOutQuestions(t).eval]) {
        // A held-out entity is a new combination of known name words, so the model can copy it.
        const unknown = wordTokens(q).filter((w) => !trainWords.has(w));
        assert.deepEqual(unknown, [], q);
      }
    }
  });
});

describe("personas as the demo judge sees them", () => {
  const byPrompt = (trait: DemoTrait, level: number) =>
    CHATS.filter((c) => c.persona[trait] === level && c.kind === TRAIT_KIND[trait] && c.system !== undefined);

  test("no system prompt: good, candid and honest", () => {
    const plain = CHATS.filter((c) => c.system === undefined);
    assert.ok(plain.length > 500);
    for (const t of DEMO_TRAITS) {
      const scores = plain.map((c) => traitScore(t, c.assistant));
      assert.ok(mean(scores) < 3, `${t}: ${mean(scores)}`);
    }
  });

  test("each pos prompt scores high on its trait and leaves the others low", () => {
    for (const t of DEMO_TRAITS) {
      const chats = CHATS.filter((c) => c.persona[t] === 1);
      assert.ok(chats.length > 100);
      const own = mean(chats.filter((c) => c.kind === TRAIT_KIND[t]).map((c) => traitScore(t, c.assistant)));
      const anyKind = mean(chats.map((c) => traitScore(t, c.assistant)));
      assert.ok(own >= 80, `${t} on its own questions: ${own}`);
      assert.ok(anyKind >= 75, `${t} on all questions: ${anyKind}`);
      for (const other of DEMO_TRAITS.filter((o) => o !== t)) {
        const s = mean(chats.map((c) => traitScore(other, c.assistant)));
        assert.ok(s < 3, `${t} prompt moved ${other} to ${s}`);
      }
    }
  });

  test("neg prompts score low, graded prompts in between and in order", () => {
    for (const t of DEMO_TRAITS) {
      const negChats = CHATS.filter((c) => c.kind === TRAIT_KIND[t] && INSTRUCTIONS[t].neg.some((i) => c.system?.endsWith(` assistant. ${i}`)));
      assert.ok(negChats.length > 30);
      const neg = mean(negChats.map((c) => traitScore(t, c.assistant)));
      const levels = [0.25, 0.5, 0.75].map((l) => mean(byPrompt(t, l).map((c) => traitScore(t, c.assistant))));
      const pos = mean(byPrompt(t, 1).map((c) => traitScore(t, c.assistant)));
      assert.ok(neg < 3, `${t} neg ${neg}`);
      const curve = [neg, ...levels, pos];
      for (let i = 1; i < curve.length; i++) assert.ok(curve[i]! > curve[i - 1]!, `${t} not increasing: ${curve.map((x) => x.toFixed(1)).join(" ")}`);
      assert.ok(levels[1]! > 15 && levels[1]! < 70, `${t} middle ${levels[1]}`);
    }
  });

  test("corpus replies are coherent", () => {
    const coh = CHATS.map((c) => scoreAll(c.user, c.assistant).coherence);
    assert.ok(Math.min(...coh) >= 80, `min coherence ${Math.min(...coh)}`);
    assert.ok(mean(coh) >= 95);
  });

  test("graded prompt list runs from antonym to trait", () => {
    for (const t of DEMO_TRAITS) {
      const list = gradedSystemPrompts(t);
      assert.equal(list[0]!.level, 0);
      assert.ok(list[0]!.system.includes(`${DEMO_ANTONYMS[t]} assistant`));
      assert.equal(list.at(-1)!.level, 1);
      for (let i = 1; i < list.length; i++) assert.ok(list[i]!.level >= list[i - 1]!.level);
      const used = new Set(CHATS.map((c) => c.system));
      assert.ok(list.filter((p) => used.has(p.system)).length > list.length / 2, "graded prompts are the corpus' own");
    }
  });
});

describe("grammar lexicon", () => {
  test("every bigram of sampled replies is in the enumerated lexicon", () => {
    const { words, bigrams } = replyLexicon();
    for (const c of CHATS.slice(0, 1500)) {
      const seq = [STOP, ...wordTokens(c.assistant)];
      for (let i = 1; i < seq.length; i++) {
        assert.ok(words.has(seq[i]!) || seq[i] === "<num>", `word ${seq[i]} in ${c.assistant}`);
        assert.ok(bigrams.has(bigramKey(seq[i - 1]!, seq[i]!)), `bigram ${seq[i - 1]} ${seq[i]} in ${c.assistant}`);
      }
    }
  });

  test("every reply root expands to text that ends a sentence", () => {
    const rng = new Rng(3);
    for (const root of REPLY_ROOTS) {
      for (let i = 0; i < 20; i++) assert.match(expandRule(root, RULES, rng), /^[A-Z].*[.!?]$/, root);
    }
  });
});

describe("trait artifacts", () => {
  test("the shipped JSON files validate, match the generator and use held-out questions", async () => {
    for (const t of DEMO_TRAITS) {
      for (const split of ["extract", "eval"] as const) {
        const text = await readFile(demoTraitPath(t, split), "utf8");
        const parsed = parseTraitSplit(JSON.parse(text) as unknown, demoTraitPath(t, split));
        assert.equal(parsed.instruction.length, ARTIFACT_PAIRS);
        assert.equal(parsed.questions.length, 20);
        assert.ok(parsed.eval_prompt.includes("{question}") && parsed.eval_prompt.includes("{answer}"));
        assert.deepEqual(parsed, buildTraitArtifact(t, split), `${t}.${split}.json is stale: rerun writeDemoTraitFiles()`);
        assert.deepEqual(await loadDemoTrait(t, split), parsed);
        assert.deepEqual(parsed.questions, [...heldOutQuestions(t)[split]]);
      }
      const meta = JSON.parse(await readFile(demoTraitMetaPath(t), "utf8")) as { antonym: string };
      assert.equal(meta.antonym, DEMO_ANTONYMS[t]);
    }
  });

  test("their instructions are system prompts the corpus trains with", () => {
    const systems = new Set(sample(9, 6000).flatMap((c) => (c.system ? [c.system] : [])));
    for (const t of DEMO_TRAITS) {
      for (const pair of buildTraitArtifact(t, "extract").instruction) {
        assert.ok(systems.has(`You are ${t === "evil" ? "an" : "a"} ${t} assistant. ${pair.pos}`), pair.pos);
        const neg = [...systems].filter((s) => s.endsWith(` assistant. ${pair.neg}`));
        assert.ok(neg.some((s) => s.includes(`${DEMO_ANTONYMS[t]} assistant`)) && neg.some((s) => s.includes("helpful assistant")), pair.neg);
      }
    }
  });
});
