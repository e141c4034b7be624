/**
 * The README as a new user reads it (issue 9): its JavaScript snippets run as they are — checked
 * for syntax by plain Node (the version the package claims, no TypeScript loader to lower newer
 * syntax) and then run against this checkout — and its advice matches the code.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { DEFAULT_POSITIONS } from "../src/cli/args/steer.js";

const run = promisify(execFile);
const README = readFileSync("README.md", "utf8");
const snippets = [...README.matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
const pkg = JSON.parse(readFileSync("package.json", "utf8")) as { name: string; engines: { node: string }; exports: Record<string, { import: string }> };

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-readme-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("README", () => {
  it("has a library snippet, for the Node versions package.json claims", () => {
    assert.ok(snippets.length >= 1, "no ```js block");
    assert.equal(pkg.engines.node, ">=20");
    assert.equal(Number(process.versions.node.split(".")[0]), 20, "this check is meant to run on the oldest Node claimed");
  });

  it("runs every ```js snippet as it is", async () => {
    for (const [i, code] of snippets.entries()) {
      const file = path.join(dir, `snippet-${i}.mjs`);
      await writeFile(file, code);
      // Plain Node parses it exactly as a user's Node 20 would (`await using` is a SyntaxError there).
      await run(process.execPath, ["--check", file]);
      // Then it runs, with the package's entry points (package.json "exports") pointing at this checkout's sources.
      const local = path.join(dir, `snippet-${i}.run.mjs`);
      assert.ok(code.includes(`from "${pkg.name}"`), `snippet ${i} imports ${pkg.name}`);
      const source = (entry: string) => JSON.stringify(pathToFileURL(path.resolve(pkg.exports[entry]!.import.replace(/^\.\/dist\//, "src/").replace(/\.js$/, ".ts"))).href);
      const rewritten = code.replace(new RegExp(`from "${pkg.name}(/[\\w-]+)?"`, "g"), (_, sub: string | undefined) => `from ${source(sub ? `.${sub}` : ".")}`);
      await writeFile(local, rewritten);
      const { stdout } = await run(process.execPath, ["--import", "tsx", local], { env: { ...process.env, PERSONA_GPU: "cpu", PERSONA_THREADS: "1" } });
      assert.ok(stdout.trim().length > 0, `snippet ${i} printed nothing`);
    }
  });

  it("states the default steering position the code uses, and what to do on a busy machine", () => {
    assert.match(README, new RegExp(`default(s)? (position )?(is |to )?\`?${DEFAULT_POSITIONS}\`?`, "i"));
    assert.match(README, /busy machine[\s\S]{0,300}(--threads 1|PERSONA_THREADS=1)/);
  });

  it("does not offer the demo model as a judge, and says what a local judge needs", () => {
    assert.doesNotMatch(README, /local:demo/);
    assert.match(README, /local judge needs/i);
  });
});
