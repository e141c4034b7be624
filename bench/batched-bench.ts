/**
 * llama.cpp's own `llama-batched-bench`, built once from the pinned release's source (the same
 * llama.cpp our binaries come from) as the engine benchmark's first peer: plain CPU Release build
 * of that one target, without OpenMP like the prebuilt binaries, cached under .cache/llama-src.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { LLAMA_SRC_CACHE, cmakeBuild } from "../scripts/llama-source.js";

const BUILD_DIR = path.join(LLAMA_SRC_CACHE, "build-bench");
const BINARY = path.join(BUILD_DIR, "bin", "llama-batched-bench");

/** The binary's path, built on first use (minutes on 2 cores), or null with the reason printed. */
export function ensureBatchedBench(): string | null {
  if (existsSync(BINARY)) return BINARY;
  try {
    console.error(`building llama-batched-bench from the pinned source into ${BUILD_DIR} (once; several minutes) ...`);
    cmakeBuild(BUILD_DIR, ["llama-batched-bench"], ["-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=ON"]);
    return BINARY;
  } catch (e) {
    console.log(`llama-batched-bench: skipped, it could not be built here (needs npm, git, cmake ≥ 3.14 and a C++17 compiler): ${(e as Error).message.split("\n")[0]}`);
    return null;
  }
}

export interface BatchedBenchResult {
  /** Generation seconds and tokens/s (sequences × tokens). */
  tTg: number;
  speedTg: number;
  /**
   * CPU milliseconds per generation step (all threads), or undefined off Linux: the difference
   * between a run of 2× and one of 1× the tokens. Far less sensitive than wall time to neighbours
   * on a shared machine, since time spent descheduled does not count.
   */
  cpuStepMs: number | undefined;
}

/** CPU time of this process's finished children (Linux /proc; clock ticks of 10 ms). */
function childCpuMs(): number | undefined {
  if (!existsSync("/proc/self/stat")) return undefined;
  const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ");
  // cutime and cstime are fields 16 and 17 of stat(5); fields[0] here is field 3.
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

/** Runs `parallel` sequences of `tokens` generated tokens; `unified` is its -kvu flag (one KV buffer for all sequences). */
export function runBatchedBench(
  binary: string,
  o: { model: string; threads: number; promptTokens: number; tokens: number; parallel: number; unified: boolean },
): BatchedBenchResult {
  const once = (tokens: number) => {
    const ctx = Math.ceil((o.parallel * (o.promptTokens + tokens)) / 256) * 256;
    const args = ["-m", o.model, "-c", String(ctx), "-b", "512", "-ub", "512", "-t", String(o.threads), "-tb", String(o.threads)];
    args.push("-npp", String(o.promptTokens), "-ntg", String(tokens), "-npl", String(o.parallel), "--output-format", "jsonl");
    if (o.unified) args.push("-kvu");
    // Its log thread sometimes exits before printing the result line: run again then.
    for (let attempt = 0; attempt < 5; attempt++) {
      const cpu0 = childCpuMs();
      const out = execFileSync(binary, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
      const cpu1 = childCpuMs();
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if (!line) continue;
      const j = JSON.parse(line) as { t_tg: number; speed_tg: number };
      return { tTg: j.t_tg, speedTg: j.speed_tg, cpu: cpu0 === undefined || cpu1 === undefined ? undefined : cpu1 - cpu0 };
    }
    throw new Error(`llama-batched-bench printed no result (${args.join(" ")})`);
  };
  const one = once(o.tokens);
  const two = once(2 * o.tokens);
  const cpuStepMs = one.cpu === undefined || two.cpu === undefined ? undefined : (two.cpu - one.cpu) / o.tokens;
  return { tTg: one.tTg, speedTg: one.speedTg, cpuStepMs };
}
