/**
 * The layering rules of CONTRIBUTING.md, checked over the import graph of src/: which top-level
 * module may import which, and that CLI commands do not import each other. A new top-level
 * module must be given its place in LAYERS.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../src");

const BASE = ["errors", "util"];
const STORAGE = [...BASE, "store", "datadir"];
const CORE = [...STORAGE, "engine", "hub", "vectors", "traits", "judge", "convert"];

/** Each module and the modules it may import (besides itself). */
const LAYERS: Record<string, readonly string[]> = {
  errors: [],
  util: ["errors"],
  datadir: BASE,
  store: BASE,
  engine: STORAGE,
  hub: STORAGE,
  vectors: [...STORAGE, "engine"],
  traits: [...STORAGE, "engine"],
  convert: [...STORAGE, "engine", "vectors"],
  judge: [...STORAGE, "engine", "hub", "vectors", "traits"],
  // Shard runners (local, BullMQ): pipelines hand them their work; they know no pipeline.
  queue: [...STORAGE, "engine"],
  // Pipelines write their own reports; reports see pipelines' result types only (TYPES_ONLY).
  report: CORE,
  pipeline: [...CORE, "report", "queue"],
  server: [...CORE, "pipeline", "report"],
  demo: [...CORE, "pipeline", "report"],
  index: [...CORE, "pipeline", "report"],
  cli: [...CORE, "pipeline", "report", "queue", "demo", "server", "index"],
};

/** Imports of types only (`import type`) that may also go from the first module to the second. */
const TYPES_ONLY: Record<string, readonly string[]> = { report: ["pipeline"] };

/** Known breaches, each with the file that holds it; remove an entry when its import goes. */
const EXCEPTIONS = new Set<string>([]);

function* tsFiles(dir: string): Generator<string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* tsFiles(p);
    else if (e.name.endsWith(".ts")) yield p;
  }
}

/** Relative specifiers of static imports, re-exports, dynamic imports and `new URL(…, import.meta.url)`, and whether each is type-only. */
function relativeImports(source: string): { spec: string; typeOnly: boolean }[] {
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|new URL\(\s*)["'](\.{1,2}\/[^"']+)["']/g;
  return Array.from(source.matchAll(re), (m) => {
    const statement = source.slice(source.lastIndexOf("\n", m.index) + 1, m.index);
    return { spec: m[1]!, typeOnly: /^\s*(?:import|export) type\b/.test(statement) };
  });
}

const moduleOf = (file: string) => path.relative(SRC, file).split(path.sep)[0]!.replace(/\.[jt]s$/, "");

const edges = [...tsFiles(SRC)]
  .flatMap((file) =>
    relativeImports(readFileSync(file, "utf8")).map(({ spec, typeOnly }) => ({ file, typeOnly, target: path.resolve(path.dirname(file), spec) })),
  )
  // Package files (package.json, models/) are data, not layers.
  .filter(({ target }) => !path.relative(SRC, target).startsWith(".."));

test("every module imports only the layers below it", () => {
  const breaches: string[] = [];
  for (const { file, target, typeOnly } of edges) {
    const from = moduleOf(file);
    const to = moduleOf(target);
    assert.ok(from in LAYERS, `src/${from} has no place in LAYERS (test/layers.test.ts): say which modules it may import`);
    if (from === to || LAYERS[from]!.includes(to) || (typeOnly && TYPES_ONLY[from]?.includes(to))) continue;
    const rel = `${path.relative(SRC, file)} -> ${to}`;
    if (!EXCEPTIONS.has(rel)) breaches.push(rel);
  }
  assert.deepEqual(breaches, [], "imports that break the layering (see CONTRIBUTING.md)");
});

test("CLI commands do not import each other", () => {
  const commands = path.join(SRC, "cli", "commands");
  const crossing = edges
    .filter(({ file, target }) => path.dirname(file) === commands && path.dirname(target) === commands && path.basename(file) !== "index.ts")
    .map(({ file, target }) => `${path.basename(file)} -> ${path.basename(target)}`)
    .filter((e) => !EXCEPTIONS.has(e));
  assert.deepEqual(crossing, [], "shared code goes to src/cli/args/ or the library");
});
