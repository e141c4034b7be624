/**
 * The llama.cpp source of the pinned binaries, unpacked offline from the node-llama-cpp npm
 * tarball (its git bundle holds the exact release), cached under .cache/llama-src. Used by the FFI
 * layout check (headers) and the engine benchmark (llama.cpp's own llama-batched-bench).
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import path from "node:path";
import { BINARIES_VERSION } from "../src/engine/ffi/discover.js";

export const LLAMA_SRC_CACHE = path.resolve(".cache/llama-src");

export function sh(cmd: string, args: string[], cwd?: string): string {
  return execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
}

/** The source tree's path, fetched (npm pack, tar, git clone) on first use. */
export function fetchLlamaSource(): string {
  const src = path.join(LLAMA_SRC_CACHE, "llama.cpp");
  if (existsSync(path.join(src, "include", "llama.h"))) return src;
  mkdirSync(LLAMA_SRC_CACHE, { recursive: true });
  sh("npm", ["pack", `node-llama-cpp@${BINARIES_VERSION}`, "--silent"], LLAMA_SRC_CACHE);
  const tgz = readdirSync(LLAMA_SRC_CACHE).find((f) => f.endsWith(".tgz"))!;
  sh("tar", ["xzf", tgz], LLAMA_SRC_CACHE);
  sh("git", ["clone", "--quiet", path.join(LLAMA_SRC_CACHE, "package", "llama", "gitRelease.bundle"), src]);
  return src;
}
