/**
 * Developer check: compiles a C program against the exact llama.cpp headers of the pinned
 * binaries (from the node-llama-cpp@3.21.1 npm tarball, whose git bundle holds the source) and
 * compares every struct's sizeof/offsetof with the koffi declarations in src/engine/ffi/llama.ts.
 * Needs npm, git and a C compiler; caches the source under .cache/llama-src.
 *   npm run check:ffi
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { BINARIES_VERSION } from "../src/engine/ffi/discover.js";
import { DECLARED_LAYOUTS, GGML_TENSOR, declaredLayout } from "../src/engine/ffi/llama.js";
import { LLAMA_SRC_CACHE as cache, fetchLlamaSource, sh } from "./llama-source.js";

/** What our TypeScript declares: "struct sizeof" and "struct.field" → bytes. */
function declared(): Map<string, number> {
  const out = new Map<string, number>();
  for (const [name, type] of Object.entries(DECLARED_LAYOUTS)) {
    const { size, offsets } = declaredLayout(type);
    out.set(`${name} sizeof`, size);
    for (const [f, o] of Object.entries(offsets)) out.set(`${name}.${f}`, o);
  }
  out.set("ggml_tensor sizeof", GGML_TENSOR.size);
  for (const f of ["type", "ne", "nb", "data", "name"] as const) out.set(`ggml_tensor.${f}`, GGML_TENSOR[f]);
  return out;
}

/** The same keys, measured by the C compiler on the real headers. */
function measured(keys: string[]): Map<string, number> {
  const cType = (name: string) => (name === "llama_batch" || name === "llama_sampler_chain_params" ? name : `struct ${name}`);
  const lines = keys.map((key) => {
    const [name, rest] = key.includes(" sizeof") ? [key.split(" ")[0]!, null] : key.split(".") as [string, string];
    const expr = rest === null ? `sizeof(${cType(name)})` : `offsetof(${cType(name)}, ${rest})`;
    return `  printf("%s %zu\\n", "${key}", ${expr});`;
  });
  const work = path.join(cache, "check");
  mkdirSync(work, { recursive: true });
  const program = `#include <stdio.h>\n#include <stddef.h>\n#include "llama.h"\n#include "ggml.h"\nint main(void) {\n${lines.join("\n")}\n  return 0;\n}\n`;
  writeFileSync(path.join(work, "layout.c"), program);
  const inc = ["-I", path.join(src, "include"), "-I", path.join(src, "ggml", "include")];
  sh("cc", ["-std=c11", ...inc, "-o", path.join(work, "layout"), path.join(work, "layout.c")]);
  const out = new Map<string, number>();
  for (const l of sh(path.join(work, "layout"), []).trim().split("\n")) {
    const at = l.lastIndexOf(" ");
    out.set(l.slice(0, at), Number(l.slice(at + 1)));
  }
  return out;
}

const src = fetchLlamaSource();
const want = declared();
const got = measured([...want.keys()]);
let bad = 0;
for (const [key, d] of want) {
  const h = got.get(key);
  const ok = h === d;
  if (!ok) bad++;
  console.log(`${ok ? "ok  " : "FAIL"} ${key.padEnd(50)} declared ${String(d).padStart(4)}  header ${h}`);
}
if (bad > 0) {
  console.error(`\n${bad} layout mismatch(es): fix src/engine/ffi/llama.ts`);
  process.exit(1);
}
console.log(`\nall ${want.size} sizes and offsets match the headers of llama.cpp in node-llama-cpp@${BINARIES_VERSION}`);
