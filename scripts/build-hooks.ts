/**
 * Compiles the engine's eval filter (src/engine/ffi/eval-filter.c) with the system's C compiler,
 * in well under a second: with it, a decode step that captures, projects or steers through hooks
 * calls into JS once per hooked layer instead of once per graph node. The engine uses it whenever
 * it is built (PERSONA_NATIVE_HOOKS=0 or Engine.create({ nativeHooks: false }) turns it off).
 * `npm ci` runs this with --optional (no compiler: a note, and the engine's JS path); `npm run
 * build:llama` runs it too when the library is older than the source (or missing).
 *   npm run build:hooks [-- --optional]
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { EVAL_FILTER_LIBRARY } from "../src/engine/ffi/discover.js";

const SOURCE = fileURLToPath(new URL("../src/engine/ffi/eval-filter.c", import.meta.url));

/** Builds the library into EVAL_FILTER_LIBRARY (atomically: a running engine never sees half a file). */
export function buildEvalFilter(): string {
  mkdirSync(path.dirname(EVAL_FILTER_LIBRARY), { recursive: true });
  const tmp = `${EVAL_FILTER_LIBRARY}.${process.pid}.tmp`;
  const shared = process.platform === "darwin" ? "-dynamiclib" : "-shared";
  try {
    execFileSync(process.env.CC || "cc", ["-std=c11", "-O2", "-fPIC", "-Wall", shared, "-o", tmp, SOURCE], { stdio: ["ignore", "inherit", "inherit"] });
    renameSync(tmp, EVAL_FILTER_LIBRARY);
  } finally {
    rmSync(tmp, { force: true });
  }
  return EVAL_FILTER_LIBRARY;
}

/** Whether `library` was built after the last change to the source (build:llama then leaves it). */
export function evalFilterUpToDate(library = EVAL_FILTER_LIBRARY): boolean {
  return existsSync(library) && statSync(library).mtimeMs >= statSync(SOURCE).mtimeMs;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    console.error(`built the eval filter: ${buildEvalFilter()}`);
  } catch (e) {
    if (!process.argv.includes("--optional")) throw e;
    console.error(`note: could not compile ${SOURCE} (${(e as Error).message.split("\n")[0]}); hooked decode steps take the slower JS path`);
  }
}
