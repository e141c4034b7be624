/**
 * Fork-server child: runs cases [start, end) of one target in this process, each from the real
 * command's code path. Before a case it announces `B <i>` and after it `E <i> <outcome> <json>` on
 * fd 3 with a synchronous write, so when native code aborts the process mid-case the parent
 * knows which case did it. A case that hangs is the parent's to kill.
 *   node --import tsx scripts/fuzz/server.ts TARGET SEED START END WORKDIR
 */
import { writeSync } from "node:fs";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { main } from "../../src/cli/main.js";
import { Engine } from "../../src/engine/Engine.js";
import { PersonaError } from "../../src/errors.js";
import { caseRng } from "./rng.js";
import { CliRefusal, UnexpectedError, type FuzzCase, type RunEnv } from "./target.js";
import { TARGETS } from "./targets/index.js";

const [targetName, seedText, startText, endText, workDir] = process.argv.slice(2);
const target = TARGETS.find((t) => t.name === targetName);
if (!target || !workDir) throw new Error(`usage: server.ts TARGET SEED START END WORKDIR (targets: ${TARGETS.map((t) => t.name).join(", ")})`);
const seed = Number(seedText);
const start = Number(startText);
const end = Number(endText);

const CONTROL_FD = 3;
function announce(line: string): void {
  writeSync(CONTROL_FD, `${line}\n`);
}

/** Codes that mean our code failed, not that the input was refused. */
const FAILURE_CODES = new Set(["E_INTERNAL", "E_ENGINE_CRASHED"]);

let engine: Engine | undefined;
const env: RunEnv = {
  async engine() {
    engine ??= await Engine.create({ threads: 1 });
    return engine;
  },
  async cli(argv) {
    let err = "";
    const code = await main(argv, { out: () => undefined, err: (t) => void (err += t) });
    // main() prints known failures as `persona: message [CODE]` and anything else as `persona: unexpected error: <stack>`.
    const failed = err.includes("persona: unexpected error") || [...FAILURE_CODES].some((c) => err.includes(`[${c}]`));
    if (failed) throw new UnexpectedError(err.trim().slice(-2000));
    if (code !== 0) throw new CliRefusal(code, err);
  },
};

type Outcome = { kind: "ran" } | { kind: "refused"; code: string; message: string } | { kind: "unexpected"; message: string };

function classify(e: unknown): Outcome {
  if (e instanceof PersonaError && !FAILURE_CODES.has(e.code)) return { kind: "refused", code: e.code, message: e.message };
  if (e instanceof CliRefusal) {
    const code = /\[(E_[A-Z_]+)\]\s*$/.exec(e.message)?.[1] ?? "USAGE";
    return { kind: "refused", code, message: e.message };
  }
  const message = e instanceof UnexpectedError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e);
  return { kind: "unexpected", message };
}

/** Empties the case directory (it is the cwd, so it stays) and writes the case's files into it. */
async function writeCase(dir: string, c: FuzzCase): Promise<void> {
  for (const name of await readdir(dir)) await rm(path.join(dir, name), { recursive: true, force: true });
  for (const [name, data] of Object.entries(c.files)) {
    await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await writeFile(path.join(dir, name), data);
  }
}

const state = await target.setup();
const caseDir = path.resolve(workDir, `case-${process.pid}`);
await mkdir(caseDir, { recursive: true });
process.chdir(caseDir);
for (let i = start; i < end; i++) {
  const c = await target.make(caseRng(target.name, seed, i), state);
  await writeCase(caseDir, c);
  announce(`B ${i}`);
  let outcome: Outcome;
  try {
    await target.run(c, env);
    outcome = { kind: "ran" };
  } catch (e) {
    outcome = classify(e);
    if (e instanceof PersonaError && e.code === "E_ENGINE_CRASHED") {
      await engine?.dispose().catch(() => undefined);
      engine = undefined;
    }
  }
  const detail = outcome.kind === "ran" ? "" : JSON.stringify(outcome.kind === "refused" ? outcome.code : outcome.message);
  announce(`E ${i} ${outcome.kind} ${detail}`);
}
process.chdir(workDir);
await rm(caseDir, { recursive: true, force: true });
await target.teardown?.();
await engine?.dispose();
