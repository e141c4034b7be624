import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const CLI = fileURLToPath(new URL("../src/cli/bin.ts", import.meta.url));

test("a reader that closes the pipe early (persona sweep --help | head -1) ends the CLI quietly", async () => {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, "sweep", "--help"], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  // As `head -1` does: read the first chunk, then close our end while the CLI is still writing.
  child.stdout.once("data", () => child.stdout.destroy());
  const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
  assert.equal(stderr, "", "no EPIPE stack trace");
  assert.equal(code, 0);
});
