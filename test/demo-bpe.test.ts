import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { encodeWithBpe, pretokenize, trainByteLevelBpe } from "../src/demo/bpe.js";
import { generateCorpus, renderTrainingText } from "../src/demo/corpus.js";
import { byteTokens } from "../src/engine/gguf/byte-unicode.js";
import { PersonaError } from "../src/errors.js";

const SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"];
const corpus = (seed: number, n: number) => [...generateCorpus({ seed, nConversations: n })].map(renderTrainingText);
const TRAIN = corpus(1, 3000);
const VOCAB = trainByteLevelBpe(TRAIN, { vocabSize: 1024, specialTokens: SPECIAL });

const charToByte = new Map(byteTokens().map((c, b) => [c, b]));
const unicodeToBytes = (piece: string) =>
  [...piece].map((ch) => {
    const b = charToByte.get(ch);
    assert.ok(b !== undefined, `not a byte-level BPE character: ${JSON.stringify(ch)}`);
    return b;
  });
const decode = (pieces: readonly string[], specials: readonly string[]) =>
  new TextDecoder().decode(
    Uint8Array.from(pieces.flatMap((p) => (specials.includes(p) ? [...new TextEncoder().encode(p)] : unicodeToBytes(p)))),
  );

describe("trainByteLevelBpe", () => {
  test("vocabulary layout: 256 bytes, merges in order, special tokens last", () => {
    assert.equal(VOCAB.tokens.length, 1024);
    assert.equal(VOCAB.merges.length, 1024 - 256 - SPECIAL.length);
    assert.deepEqual(VOCAB.tokens.slice(-3), SPECIAL);
    VOCAB.merges.forEach((m, i) => {
      const [l, r] = m.split(" ");
      assert.equal(VOCAB.tokens[256 + i], `${l}${r}`);
      // Both halves exist before the merge that uses them.
      assert.ok(VOCAB.tokens.slice(0, 256 + i).includes(l!) && VOCAB.tokens.slice(0, 256 + i).includes(r!));
    });
    assert.equal(new Set(VOCAB.tokens).size, VOCAB.tokens.length);
    assert.ok(!VOCAB.tokens.slice(0, -3).some((t) => t.includes("<|")), "special tokens are never learned as merges");
  });

  test("is deterministic", () => {
    assert.deepEqual(trainByteLevelBpe(TRAIN, { vocabSize: 1024, specialTokens: SPECIAL }), VOCAB);
  });

  test("the first merge is the most frequent adjacent pair", () => {
    const counts = new Map<string, number>();
    for (const t of ["aaab aab", "ab ab"]) for (const p of pretokenize(t)) for (let i = 1; i < p.length; i++) counts.set(p[i - 1] + " " + p[i], (counts.get(p[i - 1] + " " + p[i]) ?? 0) + 1);
    const best = [...counts].sort((a, b) => b[1] - a[1])[0]![0];
    assert.equal(trainByteLevelBpe(["aaab aab", "ab ab"], { vocabSize: 257 }).merges[0], best);
  });

  test("stops early when no pair repeats", () => {
    const v = trainByteLevelBpe(["abc"], { vocabSize: 400 });
    assert.equal(v.merges.length, 0);
    assert.equal(v.tokens.length, 256);
  });

  test("rejects a vocabulary too small for bytes and specials", () => {
    assert.throws(() => trainByteLevelBpe(["x"], { vocabSize: 257, specialTokens: SPECIAL }), PersonaError);
  });

  test("trains a few MB quickly", () => {
    const big = corpus(2, 12000);
    const t0 = performance.now();
    const v = trainByteLevelBpe(big, { vocabSize: 2048, specialTokens: SPECIAL });
    assert.ok(v.merges.length > 1000);
    assert.ok(performance.now() - t0 < 8000, `took ${performance.now() - t0} ms`);
  });
});

describe("encodeWithBpe", () => {
  test("round-trips arbitrary text to the same bytes", () => {
    const texts = [
      corpus(42, 5).join(""),
      "Ünïcödé, emoji 🎉🚀, tabs\tand\nnewlines  and   spaces, CJK 漢字, 'quotes' don't 1234567",
      "\u0000\u0001 control \uFFFD replacement",
      "",
    ];
    for (const t of texts) assert.equal(decode(encodeWithBpe(t, VOCAB.merges, SPECIAL), SPECIAL), t);
  });

  test("only emits vocabulary tokens and keeps special tokens whole", () => {
    const vocab = new Set(VOCAB.tokens);
    const text = corpus(43, 3).join("");
    const pieces = encodeWithBpe(text, VOCAB.merges, SPECIAL);
    for (const p of pieces) assert.ok(vocab.has(p), p);
    assert.equal(pieces.filter((p) => p === "<|im_start|>").length, (text.match(/<\|im_start\|>/g) ?? []).length);
  });

  test("merges shrink held-out corpus text well below its byte count", () => {
    const held = corpus(999, 200).join("");
    const bytes = new TextEncoder().encode(held).length;
    const n = encodeWithBpe(held, VOCAB.merges, SPECIAL).length;
    assert.ok(n < bytes / 3, `${n} tokens for ${bytes} bytes`);
    assert.ok(n < encodeWithBpe(held, VOCAB.merges.slice(0, 100), SPECIAL).length);
  });
});
