/**
 * Builds llama.cpp's CPU backend (libggml-cpu.so, where decoding spends its time) from the pinned
 * release's source with this machine's compiler, tuned for this CPU. The prebuilt packages stay the
 * default; PERSONA_CPU_BACKEND (or EngineOptions.cpuBackend) naming the file makes the engine load
 * it in place of the prebuilt CPU variants, next to the prebuilt libllama and libggml-base: it is
 * the same kind of module as those variants, of the same source, so the FFI layouts that
 * `npm run check:ffi` checks hold for it too.
 *
 * Why: the prebuilt CPU variants are compiled by GCC 11, whose code for llamafile's F16 GEMM
 * kernel (tinyBLAS gemm_bloc<4,4>) stores all 16 accumulators to the stack on every iteration;
 * batched decoding spends most of its time there (`npm run bench:engine` compares both).
 *
 * Needs npm, git, cmake ≥ 3.14 and a C++17 compiler; minutes on 2 cores (run at nice 10).
 *   npm run build:llama
 */
import { existsSync, writeFileSync } from "node:fs";
import path from "node:path";
import { BINARIES_VERSION, CPU_BACKEND_STAMP, EVAL_FILTER_LIBRARY } from "../src/engine/ffi/discover.js";
import { buildEvalFilter, evalFilterUpToDate } from "./build-hooks.js";
import { LOCAL_CPU_BACKEND, cmakeBuild, sh } from "./llama-source.js";

console.error(evalFilterUpToDate() ? `the eval filter is up to date: ${EVAL_FILTER_LIBRARY}` : `built the eval filter: ${buildEvalFilter()}`);

const binDir = path.dirname(LOCAL_CPU_BACKEND);
const buildDir = path.dirname(binDir);
console.error(`building llama.cpp's CPU backend from the pinned source into ${buildDir} ...`);
cmakeBuild(
  buildDir,
  ["ggml-cpu"],
  [
    // A loadable module like the prebuilt variants (GGML_NATIVE cannot make one: -march=native instead).
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_BACKEND_DL=ON",
    "-DGGML_NATIVE=OFF",
    "-DCMAKE_C_FLAGS=-march=native",
    "-DCMAKE_CXX_FLAGS=-march=native",
    // Links to libggml-base.so by that name and has no RUNPATH, so it binds to the prebuilt copy the
    // engine has loaded, never to the one built here.
    "-DCMAKE_PLATFORM_NO_VERSIONED_SONAME=ON",
    "-DCMAKE_SKIP_BUILD_RPATH=ON",
  ],
);
if (!existsSync(LOCAL_CPU_BACKEND)) throw new Error(`the build left no ${LOCAL_CPU_BACKEND}`);
const needed = sh("readelf", ["-d", LOCAL_CPU_BACKEND]);
if (!/\[libggml-base\.so\]/.test(needed)) throw new Error(`${LOCAL_CPU_BACKEND} does not link libggml-base.so by that name:\n${needed}`);
writeFileSync(path.join(binDir, CPU_BACKEND_STAMP), JSON.stringify({ source: `node-llama-cpp@${BINARIES_VERSION}`, compiler: sh("c++", ["--version"]).split("\n")[0] }) + "\n");
console.log(`built: PERSONA_CPU_BACKEND=${LOCAL_CPU_BACKEND} makes the engine use it`);
