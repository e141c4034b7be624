/**
 * The trait material an LLM writes for `persona trait new NAME -d … --llm URL`: a local
 * OpenAI-compatible server answers the real command with chat completions whose content is a
 * mutated trait JSON (field types and counts, placeholders, duplicates, graded levels), wrapped
 * in prose or code fences now and then, cut short or not JSON at all; what the command accepts is
 * written and read back with `persona trait show`.
 */
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { localServer } from "../http.js";
import { applySome, interestingNumber, jsonValue, mutateJson, nastyString } from "../mutate.js";
import { CliRefusal, type FuzzCase, type RunEnv, type Target, UnexpectedError } from "../target.js";

/** A reply the command accepts with `--questions 2` (4 questions) and its default 5 pairs. */
function seedReply(): Record<string, unknown> {
  return {
    antonym: "warm",
    instruction: Array.from({ length: 5 }, (_, i) => ({ pos: `Be curt, way ${i}.`, neg: `Be warm, way ${i}.` })),
    questions: ["How do I boil an egg?", "What should I cook tonight?", "Can you recommend a book?", "How do I fix a flat tyre?", "What is a good hobby?"],
    graded: [0, 0.17, 0.33, 0.5, 0.67, 0.83, 1].map((level) => ({ level, system: `You are a curt assistant ${level}.` })),
    eval_prompt: "Question: {question}\nAnswer: {answer}\nSay REFUSAL if it refused, else 0-100 for how curt it is.",
  };
}

function edit(rng: Rng, doc: Record<string, unknown>): string {
  const list = (k: string): unknown[] => (Array.isArray(doc[k]) ? (doc[k] as unknown[]) : (doc[k] = []) as unknown[]);
  return applySome(rng, 3, [
    () => mutateJson(rng, doc).what,
    () => {
      doc.eval_prompt = rng.pick(["{question}", "{answer} {question}", "{question}{question}{answer} REFUSAL", "REFUSAL {question} {answer} {x}", "{{question}} {{answer}} REFUSAL", nastyString(rng), 5]);
      return "eval_prompt";
    },
    () => {
      const q = list("questions");
      const what = rng.int(3);
      if (what === 0) q.push(...q);
      else if (what === 1) q.splice(0, q.length, ...Array.from({ length: rng.pick([0, 1, 3, 1000]) }, () => nastyString(rng)));
      else q[rng.int(q.length + 1)] = rng.pick([null, 5, "", "  ", "How do I boil an egg??", nastyString(rng)]);
      return "questions";
    },
    () => {
      const pairs = list("instruction");
      pairs[rng.int(pairs.length + 1)] = rng.pick([null, {}, { pos: "x" }, { pos: "", neg: " " }, { pos: 1, neg: 2 }, { pos: nastyString(rng), neg: nastyString(rng) }, "pos"]);
      return "instruction pair";
    },
    () => {
      const graded = list("graded");
      graded[rng.int(graded.length + 1)] = { level: rng.chance(0.5) ? interestingNumber(rng) : jsonValue(rng), system: rng.chance(0.7) ? "You are curt." : jsonValue(rng) };
      return "graded level";
    },
    () => {
      doc.antonym = rng.pick(["", " ", nastyString(rng), 5, null, ["warm"]]);
      return "antonym";
    },
  ]);
}

/** The reply text around the JSON: bare, in a code fence, after a sentence, cut, or without an object. */
function wrap(rng: Rng, json: string): string {
  switch (rng.int(8)) {
    case 0:
      return `\`\`\`json\n${json}\n\`\`\``;
    case 1:
      return `Here is the material:\n${json}\nHope this helps {`;
    case 2:
      return json.slice(0, rng.int(json.length));
    case 3:
      return rng.pick(["", "I can't help with that.", "}{", "```json\n```", "{", `{"a": 1}} {"b": 2}`, nastyString(rng)]);
    case 4:
      return `\`\`\`\n${json}\n\`\`\` and also \`\`\`json\n{"x": 1}\n\`\`\``;
    default:
      return json;
  }
}

export const traitgenTarget: Target<null> = {
  name: "traitgen",
  description: "the trait JSON an LLM writes for trait new (schema, placeholders, duplicates, graded levels, prose and fences), served as OpenAI chat completions",
  setup: async () => null,
  async make(rng): Promise<FuzzCase> {
    // One reply per try: the command asks again (once, with --retries 1) after a malformed one.
    const replies: string[] = [];
    const notes: string[] = [];
    for (let i = 0; i < 2; i++) {
      const doc = seedReply();
      const what = rng.chance(0.8) ? edit(rng, doc) : "as written";
      replies.push(wrap(rng, JSON.stringify(doc, null, rng.chance(0.5) ? 2 : undefined) ?? "null"));
      notes.push(`reply ${i + 1}: ${what}`);
    }
    return {
      files: { "replies.json": JSON.stringify(replies, null, 2) },
      // The server's URL changes per process: the reproducer records the replies to serve at /v1/chat/completions.
      commands: [],
      note: notes.join("; "),
      input: replies,
    };
  },
  async run(c, env: RunEnv) {
    const replies = c.input as string[];
    const server = await localServer();
    let attempt = 0;
    server.serve(() => {
      const content = replies[Math.min(attempt++, replies.length - 1)]!;
      const body = { id: "chatcmpl-fuzz", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }] };
      return { status: 200, headers: { "content-type": "application/json" }, body: JSON.stringify(body), delivery: "whole" };
    });
    await env.cli(["trait", "new", "curt", "-d", "short, dismissive replies", "--llm", `${server.origin}/v1`, "--questions", "2", "--retries", "1", "--out", "out", "--json"]);
    try {
      await env.cli(["trait", "show", "./out", "--json"]);
    } catch (e) {
      if (e instanceof CliRefusal) throw new UnexpectedError(`trait new wrote material that trait show refuses: ${e.message}`);
      throw e;
    }
  },
};
