import type { Command } from "commander";

/** Each subcommand module exports one `register(program)`; the order here is the order in `--help`. */
export type RegisterCommand = (program: Command) => void;

export const COMMANDS: RegisterCommand[] = [];
