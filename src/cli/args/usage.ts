/**
 * The CLI's one parser error: a command line that does not parse (unknown flag, missing or
 * malformed value). Printed as one line naming the flag, with a pointer to the command's --help;
 * exit code 2, as CLI conventions have it.
 */
import type { Command, CommanderError } from "commander";
import { PersonaError } from "../../errors.js";

export const USAGE_EXIT_CODE = 2;

export class UsageError extends PersonaError {
  constructor(message: string) {
    super("E_USAGE", message);
    this.name = "UsageError";
  }
}

/** The subcommand path argv names (`vectors export`), for the --help hint. */
function commandPath(program: Command, argv: readonly string[]): string[] {
  const names: string[] = [];
  let cmd = program;
  for (const arg of argv) {
    if (arg.startsWith("-")) continue;
    const sub = cmd.commands.find((c) => c.name() === arg || c.aliases().includes(arg));
    if (!sub) break;
    names.push(sub.name());
    cmd = sub;
  }
  return names;
}

/** Flags as users type them: `-m, --model <path>` → `--model`. */
function flagName(flags: string): string {
  return /--[\w-]+/.exec(flags)?.[0] ?? flags.split(/[ ,]/)[0]!;
}

/** Rewrites commander's parse error as a UsageError. */
export function usageError(e: CommanderError, program: Command, argv: readonly string[]): UsageError {
  const raw = e.message.replace(/^error: /, "");
  let m: RegExpExecArray | null;
  let message: string;
  if ((m = /^option '([^']+)' argument '([^']*)' is invalid\. ([\s\S]*)$/.exec(raw))) {
    message = `${flagName(m[1]!)} "${m[2]}": ${m[3]}`;
  } else if ((m = /^required option '([^']+)' not specified$/.exec(raw))) {
    message = `${flagName(m[1]!)} is required`;
  } else if ((m = /^option '([^']+)' argument missing$/.exec(raw))) {
    message = `${flagName(m[1]!)} needs a value`;
  } else if ((m = /^unknown option '([^']+)'\s*(?:\(Did you mean (\S+)\?\))?$/.exec(raw))) {
    message = `unknown option ${m[1]}${m[2] ? ` (did you mean ${m[2]}?)` : ""}`;
  } else {
    message = raw.replace(/\s*\n\s*/g, " ").replace(/\.$/, "");
  }
  const path = ["persona", ...commandPath(program, argv)].join(" ");
  return new UsageError(`${message}; see \`${path} --help\``);
}
