import { stat } from "node:fs/promises";
import path from "node:path";
import type { Command } from "commander";
import { intArg } from "../args/numbers.js";
import { PersonaError } from "../../errors.js";
import { AnthropicChat } from "../../judge/anthropic.js";
import { OpenAIChat } from "../../judge/openai.js";
import { loadTraitFiles, systemPrompt, writeTrait, type TraitDefinition } from "../../traits/format.js";
import { generateTrait, type ChatLLM } from "../../traits/generate.js";
import { note, print } from "../output.js";
import { DEFAULT_TRAITS_DIR, isValidTraitName, listTraits, resolveTraitFiles, type TraitSplitName } from "../../traits/registry.js";
import { splitOption } from "../args/trait.js";

/** `persona trait new|list|show`: write trait artifacts with an LLM, and inspect them. */

const DEFAULT_MODELS = { openai: "gpt-4.1", anthropic: "claude-sonnet-4-0" } as const;

/** `openai`, `anthropic`, or the base URL of an OpenAI-compatible server. */
export function createChatLLM(llm: string, model: string | undefined): ChatLLM {
  if (llm === "openai") return new OpenAIChat({ model: model ?? DEFAULT_MODELS.openai });
  if (llm === "anthropic") return new AnthropicChat({ model: model ?? DEFAULT_MODELS.anthropic });
  if (/^https?:\/\//i.test(llm)) {
    // llama-server ignores the model name; vLLM and Ollama need the real one.
    return new OpenAIChat({ baseURL: llm, model: model ?? "default" });
  }
  throw new PersonaError("E_BAD_INPUT", `--llm must be openai, anthropic or an http(s):// base URL, got "${llm}"`);
}



function summary(def: TraitDefinition) {
  return {
    name: def.name,
    description: def.description,
    antonym: def.antonym,
    extract: { pairs: def.extract.instruction.length, questions: def.extract.questions.length },
    eval: { pairs: def.eval.instruction.length, questions: def.eval.questions.length },
  };
}

function describeTrait(def: TraitDefinition, where: string): string {
  const first = def.extract.instruction[0];
  const lines = [
    `${def.name}${def.antonym ? ` (opposite: ${def.antonym})` : ""}`,
    ...(def.description ? [`  ${def.description}`] : []),
    `  files:   ${where}`,
    `  extract: ${def.extract.instruction.length} instruction pairs, ${def.extract.questions.length} questions`,
    `  eval:    ${def.eval.instruction.length} instruction pairs, ${def.eval.questions.length} questions`,
  ];
  if (first) {
    lines.push(`  pos system prompt: ${systemPrompt(def.name, def.antonym, first.pos, "pos")}`);
    lines.push(`  neg system prompt: ${systemPrompt(def.name, def.antonym, first.neg, "neg")}`);
  }
  const q = def.extract.questions[0];
  if (q) lines.push(`  first question:    ${q}`);
  return lines.join("\n");
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

export function register(program: Command): void {
  const trait = program
    .command("trait")
    .description("create, list and inspect trait artifacts (instruction pairs, questions, judge rubric)");

  trait
    .command("new")
    .description("write a new trait's artifacts with an LLM, from its name and a description")
    .argument("<name>", "trait adjective, e.g. sycophantic (letters, digits, - and _)")
    .requiredOption("-d, --description <text>", "what the trait means, in a sentence or two")
    .option("--llm <provider>", "openai, anthropic, or an OpenAI-compatible base URL", "openai")
    .option("--model <name>", `model to ask (defaults: openai ${DEFAULT_MODELS.openai}, anthropic ${DEFAULT_MODELS.anthropic})`)
    .option("--out <dir>", `directory to write (default: ${DEFAULT_TRAITS_DIR}/NAME)`)
    .option("--questions <n>", "questions per split (extract and eval each)", intArg(1), 20)
    .option("--retries <n>", "extra tries when the LLM's reply is malformed", intArg(0), 3)
    .option("--force", "overwrite an existing trait directory")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
Writes DIR/extract.json and DIR/eval.json in the reference interchange format, and DIR/trait.json
(name, description, antonym). Needs OPENAI_API_KEY or ANTHROPIC_API_KEY for those providers.

Examples:
  $ persona trait new sycophantic -d "agrees with and flatters the user regardless of the facts"
  $ persona trait new pessimistic -d "expects the worst" --llm anthropic --out ./my-traits/pessimistic
  $ persona trait new curt -d "short, dismissive replies" --llm http://localhost:8080/v1 --model qwen2.5-7b
`,
    )
    .action(
      async (
        name: string,
        o: { description: string; llm: string; model?: string; out?: string; questions: number; retries: number; force?: boolean; json?: boolean },
      ) => {
        if (!isValidTraitName(name)) {
          throw new PersonaError("E_BAD_INPUT", `"${name}" is not a valid trait name (letters, digits, - and _)`);
        }
        const out = o.out ?? path.join(DEFAULT_TRAITS_DIR, name);
        if (!o.force && (await exists(out))) {
          throw new PersonaError("E_BAD_INPUT", `${out} already exists; pass --force to overwrite it or --out to pick another directory`);
        }
        const llm = createChatLLM(o.llm, o.model);
        if (!o.json) note(`asking ${llm.id} to write "${name}"…`);
        const def = await generateTrait({
          name,
          description: o.description,
          llm,
          questionsPerSplit: o.questions,
          maxRetries: o.retries,
        });
        await writeTrait(out, def);
        if (o.json) print(JSON.stringify({ dir: out, ...summary(def) }, null, 2));
        else print(`${describeTrait(def, out)}\nwrote ${out}`);
      },
    );

  trait
    .command("list")
    .description("list traits found by name: user traits, then built-in demo traits")
    .option("--dir <dir>", "user traits directory", DEFAULT_TRAITS_DIR)
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      `
Examples:
  $ persona trait list
  $ persona trait list --dir ./my-traits --json
`,
    )
    .action(async (o: { dir: string; json?: boolean }) => {
      const traits = await listTraits({ traitsDir: o.dir });
      if (o.json) return print(JSON.stringify(traits, null, 2));
      if (traits.length === 0) return print(`no traits found (looked in ${o.dir} and the built-in demo traits)`);
      const width = Math.max(...traits.map((t) => t.name.length));
      print(traits.map((t) => `${t.name.padEnd(width)}  ${t.source.padEnd(7)}  ${t.path}`).join("\n"));
    });

  trait
    .command("show")
    .description("show a trait's artifacts")
    .argument("<trait>", "a trait name, a trait directory, or one of its files")
    .option("--dir <dir>", "user traits directory", DEFAULT_TRAITS_DIR)
    .option("--json", "print the whole definition as JSON")
    .addOption(splitOption())
    .addHelpText(
      "after",
      `
Accepts our layout (DIR/extract.json + DIR/eval.json) and the reference implementation's
(ROOT/trait_data_extract/NAME.json + ROOT/trait_data_eval/NAME.json; name it as ROOT/NAME),
and a trait file of any name anywhere: one holding {"extract": …, "eval": …}, or one split
(say which with --split; a sibling whose name swaps extract/eval is its pair, else it serves both).

Examples:
  $ persona trait show evil
  $ persona trait show ./traits/sycophantic --json
  $ persona trait show ../persona_vectors/data_generation/evil
  $ persona trait show mine.json --split extract
`,
    )
    .action(async (ref: string, o: { dir: string; json?: boolean; split?: TraitSplitName }) => {
      const files = await resolveTraitFiles(ref, { traitsDir: o.dir, ...(o.split !== undefined ? { split: o.split } : {}) });
      const def = await loadTraitFiles(files);
      if (o.json) return print(JSON.stringify(def, null, 2));
      print(describeTrait(def, `${files.extractPath}, ${files.evalPath}`));
    });
}
