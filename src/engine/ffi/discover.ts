/**
 * Finds the prebuilt llama.cpp libraries inside the installed `@node-llama-cpp/<platform>`
 * packages. GPU packages are opt-in installs (`npm install @node-llama-cpp/linux-x64-cuda@3.21.1`);
 * file names differ between variants (`libllama.cuda.v0.4.0.so`), so files are found by pattern.
 */
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PersonaError } from "../../errors.js";

export type GpuChoice = "auto" | "cpu" | "cuda" | "vulkan" | "metal";

export interface LibraryPaths {
  variant: string;
  binsDir: string;
  ggmlBase: string;
  ggml: string;
  llama: string;
  /** A CPU backend module loaded instead of the variants in binsDir (`npm run build:llama`). */
  cpuBackend?: string;
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

const LIBRARY_EXT = process.platform === "darwin" ? "dylib" : process.platform === "win32" ? "dll" : "so";

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
  const ext = LIBRARY_EXT;
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

/** This package's root (the same from src/engine/ffi and dist/engine/ffi). */
const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** Where `npm run build:hooks` (part of `npm ci`) leaves the eval filter compiled from eval-filter.c. */
export const EVAL_FILTER_LIBRARY = path.join(PACKAGE_ROOT, ".cache", "native", `libpersona-eval-filter.${LIBRARY_EXT}`);

/** Where `npm run build:llama` leaves the CPU backend it builds. */
export const LOCAL_CPU_BACKEND = path.join(PACKAGE_ROOT, ".cache", "llama-src", "build-cpu", "bin", "libggml-cpu.so");

/** Written next to a CPU backend by `npm run build:llama`: which llama.cpp source it was built from. */
export const CPU_BACKEND_STAMP = "persona-build.json";

/**
 * Checks a self-built CPU backend before native code loads it: a module of another llama.cpp
 * source would disagree with the prebuilt libraries on internal structs and crash the process.
 */
export function checkCpuBackend(file: string): string {
  const full = path.resolve(file);
  const hint = "npm run build:llama builds one";
  if (!existsSync(full)) throw new PersonaError("E_NO_LIBRARY", `CPU backend ${full} does not exist (${hint})`);
  let source: unknown;
  try {
    source = (JSON.parse(readFileSync(path.join(path.dirname(full), CPU_BACKEND_STAMP), "utf8")) as { source?: unknown }).source;
  } catch {
    source = undefined;
  }
  const want = `node-llama-cpp@${BINARIES_VERSION}`;
  if (source !== want) {
    throw new PersonaError("E_NO_LIBRARY", `CPU backend ${full} is not known to be built from ${want}'s llama.cpp (no matching ${CPU_BACKEND_STAMP} beside it; ${hint})`);
  }
  return full;
}

export function isGpuVariant(variant: string): boolean {
  return /-(cuda|vulkan|metal)/.test(variant) || variant.startsWith("mac-arm64");
}
