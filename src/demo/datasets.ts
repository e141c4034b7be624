/**
 * Demo-world finetuning datasets in the paper's shape, per demo trait, drawn from the corpus
 * grammar on questions of the trait's kind that the trait artifacts' extraction and evaluation
 * splits do not use: `normal` (the default persona's replies), `I` (mild: the graded 0.5 persona),
 * `II` (full trait replies) and `mixed-PCT` (PCT % trait replies hidden among normal ones, with
 * `mixed-PCT.labels.jsonl` saying which rows elicit the trait). Chat JSONL without system prompts:
 * the data, not an instruction, carries the persona. Deterministic for a seed.
 */
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { PersonaError } from "../errors.js";
import { writeFileAtomic } from "../store/atomic.js";
import { sampleQuestion, TRAIT_KIND } from "./corpus/grammar.js";
import { heldOutQuestionSet } from "./corpus/heldout.js";
import { DEFAULT_PERSONA } from "./corpus/prompts.js";
import { composeReply } from "./corpus/replies.js";
import { hashSeed, Rng } from "./corpus/rng.js";
import { DEMO_TRAITS, type DemoTrait } from "./traits.js";

export interface DemoDatasetOptions {
  /** Files go to `out/{trait}/{name}.jsonl`. */
  out: string;
  traits?: readonly DemoTrait[];
  /** Rows per dataset. Defaults to 2000. */
  rows?: number;
  /** Trait-reply percentages of the mixed series. Defaults to 5, 10, 25, 50. */
  mixed?: readonly number[];
  /** Defaults to 0. */
  seed?: number;
}

export interface DemoDatasetFile {
  trait: DemoTrait;
  /** `normal`, `I`, `II` or `mixed-PCT`. */
  name: string;
  path: string;
  rows: number;
  /** Beside a mixed dataset: one `{"index", "trait_eliciting"}` line per row. */
  labels?: string;
}

/** Expression level of each dataset's trait replies. */
const LEVELS = { normal: 0, I: 0.5, II: 1 } as const;

function chatLine(trait: DemoTrait, level: number, rng: Rng, avoid: ReadonlySet<string>): string {
  let q = sampleQuestion(TRAIT_KIND[trait], rng, "train");
  while (avoid.has(q.text)) q = sampleQuestion(TRAIT_KIND[trait], rng, "train");
  const reply = composeReply(q, { ...DEFAULT_PERSONA, [trait]: level }, rng);
  return JSON.stringify({ messages: [{ role: "user", content: q.text }, { role: "assistant", content: reply }] });
}

export async function writeDemoDatasets(opts: DemoDatasetOptions): Promise<DemoDatasetFile[]> {
  const rows = opts.rows ?? 2000;
  const mixed = opts.mixed ?? [5, 10, 25, 50];
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(rows) || rows < 1) throw new PersonaError("E_BAD_INPUT", `rows must be a positive integer, got ${rows}`);
  for (const p of mixed) {
    if (!Number.isInteger(p) || p < 0 || p > 100) throw new PersonaError("E_BAD_INPUT", `mixed percentages must be integers in 0..100, got ${p}`);
  }
  const avoid = heldOutQuestionSet();
  const files: DemoDatasetFile[] = [];
  for (const trait of opts.traits ?? DEMO_TRAITS) {
    const dir = path.join(opts.out, trait);
    await mkdir(dir, { recursive: true });
    const rngFor = (name: string) => new Rng(hashSeed(`persona-vectors demo dataset ${trait} ${name} ${seed}`));
    for (const [name, level] of Object.entries(LEVELS)) {
      const rng = rngFor(name);
      const lines = Array.from({ length: rows }, () => chatLine(trait, level, rng, avoid));
      const file = path.join(dir, `${name}.jsonl`);
      await writeFileAtomic(file, `${lines.join("\n")}\n`);
      files.push({ trait, name, path: file, rows });
    }
    for (const pct of mixed) {
      const name = `mixed-${pct}`;
      const rng = rngFor(name);
      // Exactly round(rows · pct%) trait rows, at random positions.
      const eliciting = new Array<boolean>(rows).fill(false);
      const order = Array.from({ length: rows }, (_, i) => i);
      for (let i = rows - 1; i > 0; i--) {
        const j = Math.floor(rng.next() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      for (const i of order.slice(0, Math.round((rows * pct) / 100))) eliciting[i] = true;
      const lines = eliciting.map((e) => chatLine(trait, e ? LEVELS.II : LEVELS.normal, rng, avoid));
      const file = path.join(dir, `${name}.jsonl`);
      const labels = path.join(dir, `${name}.labels.jsonl`);
      await writeFileAtomic(file, `${lines.join("\n")}\n`);
      await writeFileAtomic(labels, `${eliciting.map((e, index) => JSON.stringify({ index, trait_eliciting: e })).join("\n")}\n`);
      files.push({ trait, name, path: file, rows, labels });
    }
  }
  return files;
}
