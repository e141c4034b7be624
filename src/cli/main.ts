import { Command, CommanderError } from "commander";
import { PersonaError } from "../errors.js";
import { COMMANDS } from "./commands/index.js";

/** Builds the `persona` program; exported so tests can run commands in-process. */
export function buildProgram(): Command {
  const program = new Command("persona")
    .description("Find, monitor and control character traits in language models with persona vectors.")
    .option("-v, --verbose", "show llama.cpp's own log lines")
    .showHelpAfterError()
    .configureOutput({ outputError: (s, write) => write(s) });
  for (const register of COMMANDS) register(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram().exitOverride();
  try {
    await program.parseAsync(argv, { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
    if (e instanceof PersonaError) {
      process.stderr.write(`persona: ${e.message} [${e.code}]\n`);
      return 1;
    }
    process.stderr.write(`persona: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return 2;
  }
}
