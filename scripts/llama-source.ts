/**
 * The llama.cpp source of the pinned binaries, unpacked offline from the node-llama-cpp npm
 * tarball (its git bundle holds the exact release), cached under .cache/llama-src. Used by the FFI
 * layout check (headers), the engine benchmark (llama.cpp's own llama-batched-bench) and
 * `npm run build:llama` (the engine's libraries built here).
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { BINARIES_VERSION, LOCAL_CPU_BACKEND } from "../src/engine/ffi/discover.js";

/** Beside the CPU backend that `npm run build:llama` builds (the engine finds it there). */
export const LLAMA_SRC_CACHE = path.resolve(LOCAL_CPU_BACKEND, "../../..");

export { LOCAL_CPU_BACKEND };

export function sh(cmd: string, args: string[], cwd?: string): string {
  return execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
}

/**
 * The source tree's path, fetched (npm pack, tar, git clone) on first use and again when the pinned
 * version changes: build:llama stamps its library with BINARIES_VERSION, so the source must be that
 * version's (an older tree would pass the stamp check with other struct layouts).
 */
export function fetchLlamaSource(): string {
  const src = path.join(LLAMA_SRC_CACHE, "llama.cpp");
  const versionFile = path.join(LLAMA_SRC_CACHE, "source-version");
  const cached = existsSync(versionFile) ? readFileSync(versionFile, "utf8").trim() : undefined;
  if (cached === BINARIES_VERSION && existsSync(path.join(src, "include", "llama.h"))) return src;
  for (const old of [src, path.join(LLAMA_SRC_CACHE, "package")]) rmSync(old, { recursive: true, force: true });
  mkdirSync(LLAMA_SRC_CACHE, { recursive: true });
  const tgz = `node-llama-cpp-${BINARIES_VERSION}.tgz`;
  if (!existsSync(path.join(LLAMA_SRC_CACHE, tgz))) sh("npm", ["pack", `node-llama-cpp@${BINARIES_VERSION}`, "--silent"], LLAMA_SRC_CACHE);
  sh("tar", ["xzf", tgz], LLAMA_SRC_CACHE);
  sh("git", ["-c", "advice.detachedHead=false", "clone", "--quiet", path.join(LLAMA_SRC_CACHE, "package", "llama", "gitRelease.bundle"), src]);
  writeFileSync(versionFile, `${BINARIES_VERSION}\n`);
  return src;
}

/**
 * Configures and builds `targets` of that source in `buildDir`: CPU only, Release, without OpenMP
 * like the prebuilt binaries, at nice 10 on 2 jobs (minutes).
 */
export function cmakeBuild(buildDir: string, targets: string[], flags: string[]): void {
  const src = fetchLlamaSource();
  const common = ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_OPENMP=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF"];
  const off = ["TESTS", "EXAMPLES", "SERVER", "APP"].map((w) => `-DLLAMA_BUILD_${w}=OFF`);
  // Compiler warnings (many, from GCC's own intrinsics headers) are shown only when the build fails.
  const run = (args: string[]) => {
    try {
      execFileSync("nice", ["-n", "10", "cmake", ...args], { stdio: ["ignore", "ignore", "pipe"], maxBuffer: 1 << 28 });
    } catch (e) {
      process.stderr.write(String((e as { stderr?: unknown }).stderr ?? "").slice(-20_000));
      throw e;
    }
  };
  run(["-S", src, "-B", buildDir, ...common, ...off, ...flags]);
  run(["--build", buildDir, "-j2", ...targets.flatMap((t) => ["--target", t])]);
}
