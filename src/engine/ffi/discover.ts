/**
 * Finds the prebuilt llama.cpp libraries inside the installed `@node-llama-cpp/<platform>`
 * packages. GPU packages are opt-in installs (`npm install @node-llama-cpp/linux-x64-cuda@3.21.1`);
 * file names differ between variants (`libllama.cuda.v0.4.0.so`), so files are found by pattern.
 */
import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { PersonaError } from "../../errors.js";

export type GpuChoice = "auto" | "cpu" | "cuda" | "vulkan" | "metal";

export interface LibraryPaths {
  variant: string;
  binsDir: string;
  ggmlBase: string;
  ggml: string;
  llama: string;
}

/** The llama.cpp build every variant must come from; the FFI layouts are checked against it. */
export const BINARIES_VERSION = "3.21.1";

function platformKey(): string {
  const os = process.platform === "darwin" ? "mac" : process.platform === "win32" ? "win" : process.platform;
  return `${os}-${process.arch}`;
}

function candidates(gpu: GpuChoice): string[] {
  const key = platformKey();
  const gpuVariants: Record<Exclude<GpuChoice, "auto" | "cpu">, string[]> = {
    cuda: [`${key}-cuda`, `${key}-cuda-ext`],
    vulkan: [`${key}-vulkan`],
    metal: [`${key}-metal`],
  };
  if (gpu === "cpu") return [key];
  if (gpu === "auto") return [...gpuVariants.cuda, ...gpuVariants.metal, ...gpuVariants.vulkan, key];
  return gpuVariants[gpu];
}

const require = createRequire(import.meta.url);

function packageDir(name: string): string | undefined {
  try {
    // The packages export only their JS entry (dist/index.js), not package.json.
    return path.resolve(path.dirname(require.resolve(`@node-llama-cpp/${name}`)), "..");
  } catch {
    return undefined;
  }
}

function findLib(dir: string, files: string[], pattern: RegExp, what: string): string {
  const hit = files.find((f) => pattern.test(f));
  if (!hit) throw new PersonaError("E_NO_LIBRARY", `no ${what} library in ${dir}`);
  return path.join(dir, hit);
}

function pathsIn(variant: string, root: string): LibraryPaths | undefined {
  const binsRoot = path.join(root, "bins");
  if (!existsSync(binsRoot)) return undefined;
  const sub = readdirSync(binsRoot).find((d) => existsSync(path.join(binsRoot, d)) && !d.startsWith("_"));
  if (!sub) return undefined;
  const binsDir = path.join(binsRoot, sub);
  const files = readdirSync(binsDir);
  const ext = process.platform === "darwin" ? "dylib" : process.platform === "win32" ? "dll" : "so";
  return {
    variant,
    binsDir,
    ggmlBase: findLib(binsDir, files, new RegExp(`^(lib)?ggml-base(\\.[\\w-]+)?\\.${ext}$`), "ggml-base"),
    ggml: findLib(binsDir, files, new RegExp(`^(lib)?ggml(\\.[\\w-]+)?(\\.v[\\d.]+)?\\.${ext}$`), "ggml"),
    llama: findLib(binsDir, files, new RegExp(`^(lib)?llama(\\.[\\w-]+)?(\\.v[\\d.]+)?\\.${ext}$`), "llama"),
  };
}

/** Picks the first installed variant for the requested device. */
export function discoverLibraries(gpu: GpuChoice = "auto"): LibraryPaths {
  const tried: string[] = [];
  for (const variant of candidates(gpu)) {
    const dir = packageDir(variant);
    tried.push(`@node-llama-cpp/${variant}`);
    if (!dir) continue;
    const found = pathsIn(variant, dir);
    if (found) return found;
  }
  throw new PersonaError(
    "E_NO_LIBRARY",
    `no llama.cpp binaries found (looked for ${tried.join(", ")}); install one with ` +
      `npm install @node-llama-cpp/${candidates(gpu)[0]}@${BINARIES_VERSION}`,
  );
}

export function isGpuVariant(variant: string): boolean {
  return /-(cuda|vulkan|metal)/.test(variant) || variant.startsWith("mac-arm64");
}
