import { Command, CommanderError } from "commander";
// The demo world (`--model demo`, its traits and judge) registers itself into the core.
import "../demo/register.js";
import { fileSystemError, PersonaError } from "../errors.js";
import { USAGE_EXIT_CODE, usageError } from "./args/usage.js";
import { COMMANDS } from "./commands/index.js";
import { type CliIO, note, STDIO, withIO } from "./output.js";
import { stopAllProgress } from "./progress.js";

/** Commander codes that are not failures: help or version asked for. */
const NOT_ERRORS = new Set(["commander.helpDisplayed", "commander.version", "commander.executeSubCommandAsync"]);

/** Builds the `persona` program; exported so tests can run commands in-process. */
export function buildProgram(io: CliIO = STDIO): Command {
  const program = new Command("persona")
    .description("Find, monitor and control character traits in language models with persona vectors.")
    .option("-v, --verbose", "show llama.cpp's own log lines")
    // Parse errors are reported by main as one line; help goes where help was asked for.
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s), outputError: () => {} })
    // Set before the commands are added so they inherit it: errors come back to main, never process.exit.
    .exitOverride();
  for (const register of COMMANDS) register(program);
  return program;
}

/** Prints a failure as `persona: message [CODE]` (a stack only for the unexpected) and gives the exit code. */
export function reportFailure(e: unknown): number {
  stopAllProgress();
  const known = e instanceof PersonaError ? e : fileSystemError(e);
  if (known) {
    note(`persona: ${known.message} [${known.code}]`);
    return known.code === "E_USAGE" ? USAGE_EXIT_CODE : 1;
  }
  note(`persona: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  return 1;
}

/** Runs one command line; returns the exit code. Output goes to `io` (the process's by default). */
export async function main(argv: string[], io: CliIO = STDIO): Promise<number> {
  return withIO(io, async () => {
    const program = buildProgram(io);
    process.exitCode = undefined;
    try {
      await program.parseAsync(argv, { from: "user" });
      return typeof process.exitCode === "number" ? process.exitCode : 0;
    } catch (e) {
      if (e instanceof CommanderError) {
        if (NOT_ERRORS.has(e.code)) return e.exitCode;
        // `persona` or `persona vectors` alone: the help was printed, nothing else to say.
        if (e.code === "commander.help") return USAGE_EXIT_CODE;
        return reportFailure(usageError(e, program, argv));
      }
      return reportFailure(e);
    } finally {
      // Commands set exitCode for soft failures; main's caller decides what to do with the result.
      process.exitCode = undefined;
    }
  });
}
