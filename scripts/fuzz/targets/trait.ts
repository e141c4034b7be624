/**
 * Trait files (our DIR/{extract,eval,trait}.json layout and the reference's
 * trait_data_extract/NAME.json), as `persona trait show|list` read them: JSON structure edits,
 * placeholder-less rubrics, odd strings and raw damage (BOM, truncation, invalid UTF-8).
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { demoTraitDir } from "../../../src/demo/traits.js";
import { applySome, mutateBytes, mutateJson, nastyString } from "../mutate.js";
import { runCommands, type FuzzCase, type Target } from "../target.js";

interface TraitSeed {
  extract: unknown;
  eval: unknown;
  meta: unknown;
}

function mutateDoc(rng: Rng, doc: unknown): { text: string; what: string } {
  const d = structuredClone(doc) as Record<string, unknown>;
  const what = applySome(rng, 3, [
    () => mutateJson(rng, d).what,
    () => {
      d.eval_prompt = rng.pick(["{question}", "{answer}", "", "{question}{answer}{", "{{question}} {{answer}}", "{question} {answer} {x}", nastyString(rng)]);
      return `eval_prompt ${JSON.stringify(d.eval_prompt).slice(0, 30)}`;
    },
    () => {
      const ins = d.instruction;
      const pair: unknown = Array.isArray(ins) && ins.length ? ins[rng.int(ins.length)] : undefined;
      if (pair && typeof pair === "object") (pair as Record<string, unknown>)[rng.pick(["pos", "neg"])] = nastyString(rng);
      return "instruction text";
    },
    () => {
      const q = d.questions;
      if (Array.isArray(q) && q.length) q[rng.int(q.length)] = rng.chance(0.8) ? nastyString(rng) : 5;
      return "question text";
    },
  ]);
  let text = JSON.stringify(d, null, rng.chance(0.5) ? 2 : undefined) ?? "null";
  if (rng.chance(0.15)) text = `\ufeff${text}`;
  return { text, what };
}

export const traitTarget: Target<TraitSeed> = {
  name: "trait",
  description: "trait files (extract/eval/trait.json and the reference layout): structure, placeholders, strings (trait show/list)",
  async setup() {
    const read = async (f: string) => JSON.parse(await readFile(path.join(demoTraitDir(), f), "utf8")) as unknown;
    return { extract: await read("evil.extract.json"), eval: await read("evil.eval.json"), meta: await read("evil.trait.json") };
  },
  async make(rng, seed): Promise<FuzzCase> {
    const reference = rng.chance(0.3);
    const ex = rng.chance(0.6) ? mutateDoc(rng, seed.extract) : { text: JSON.stringify(seed.extract), what: "" };
    const ev = rng.chance(0.4) ? mutateDoc(rng, seed.eval) : { text: JSON.stringify(seed.eval), what: "" };
    const meta = rng.chance(0.3) ? mutateDoc(rng, seed.meta) : { text: JSON.stringify(seed.meta), what: "" };
    const files: Record<string, Uint8Array | string> = reference
      ? { "ref/trait_data_extract/evil.json": ex.text, "ref/trait_data_eval/evil.json": ev.text }
      : { "traits/evil/extract.json": ex.text, "traits/evil/eval.json": ev.text, "traits/evil/trait.json": meta.text };
    const notes = [ex.what && `extract: ${ex.what}`, ev.what && `eval: ${ev.what}`, !reference && meta.what && `trait.json: ${meta.what}`];
    if (rng.chance(0.2)) {
      const name = rng.pick(Object.keys(files));
      const r = mutateBytes(rng, Buffer.from(files[name] as string));
      files[name] = r.bytes;
      notes.push(`${name}: ${r.what}`);
    }
    const ref = reference ? "ref/evil" : "traits/evil";
    return {
      files,
      commands: [
        ["trait", "show", ref, "--json"],
        ["trait", "show", reference ? "ref/trait_data_extract/evil.json" : "evil", "--dir", "traits"],
        ["trait", "list", "--dir", "traits", "--json"],
      ],
      note: [reference ? "reference layout" : "our layout", ...notes].filter(Boolean).join("; "),
    };
  },
  run: (c, env) => runCommands(env, c.commands),
};
