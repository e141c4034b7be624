/**
 * What a fuzz target is: a deterministic case generator (one seeded PRNG per case, so the parent
 * can rebuild any case the child died on) and an in-process runner that follows the same code
 * path as the `persona` commands the case lists.
 */
import type { Engine } from "../../src/engine/Engine.js";
import type { Rng } from "../../src/demo/corpus/rng.js";

export interface FuzzCase {
  /** Input files, by name relative to the case directory (which is the cwd while it runs). */
  files: Record<string, Uint8Array | string>;
  /** The real `persona` invocations this case stands for (relative paths); used to confirm a reproducer. */
  commands: string[][];
  /** Which mutations made it, for the reproducer. */
  note: string;
  /** What the in-process runner needs besides the files (a prompt, a kind of input). */
  input?: unknown;
}

export interface RunEnv {
  /** One engine per fork-server child, reused across cases (creating one costs ~150 ms). */
  engine(): Promise<Engine>;
  /** Runs `persona ARGV` in this process (stdout/stderr captured); throws CliRefusal or UnexpectedError. */
  cli(argv: string[]): Promise<void>;
}

export interface Target<S = unknown> {
  name: string;
  description: string;
  /** Builds what every case starts from (seed files); run once per process, must be deterministic. */
  setup(): Promise<S>;
  make(rng: Rng, seed: S): Promise<FuzzCase>;
  /** Runs the case in-process; resolving is a run, a PersonaError or CliRefusal a clean refusal. */
  run(c: FuzzCase, env: RunEnv): Promise<void>;
  /** Frees what the runner keeps between cases (a listening server), so the child can exit. */
  teardown?(): Promise<void>;
}

/** A CLI command that exited with a refusal (exit 1 with `persona: message [CODE]`, or a commander usage error). */
export class CliRefusal extends Error {
  constructor(readonly exitCode: number, readonly stderr: string) {
    super(stderr.trim().split("\n").pop() ?? `exit ${exitCode}`);
  }
}

/** A failure that is not a clean refusal: a stack trace, E_INTERNAL, a crashed engine worker. */
export class UnexpectedError extends Error {}

/** Runs every command of a case (a refusal does not stop the others); the first refusal is rethrown at the end. */
export async function runCommands(env: RunEnv, commands: readonly string[][]): Promise<void> {
  let refusal: CliRefusal | undefined;
  for (const argv of commands) {
    try {
      await env.cli(argv);
    } catch (e) {
      if (!(e instanceof CliRefusal)) throw e;
      refusal ??= e;
    }
  }
  if (refusal) throw refusal;
}
