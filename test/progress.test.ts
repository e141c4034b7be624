/**
 * Progress bars leave the terminal as they found it on every exit path (issue 9): a real
 * pseudo-terminal (util-linux `script`) runs a process showing a bar, which then gets SIGINT or
 * SIGTERM, fails, or exits. And the ETA stays hidden until it means something.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { etaText, formatDuration } from "../src/cli/progress.js";

const HIDE_CURSOR = "\x1b[?25l";
const SHOW_CURSOR = "\x1b[?25h";
const WRAP_OFF = "\x1b[?7l";
const WRAP_ON = "\x1b[?7h";
const CHILD = path.resolve("test/helpers/progress-child.ts");
const hasScript = spawnSync("script", ["--version"]).status === 0;

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-progress-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs the child on a pty; `kill` sends that signal once the bar is up. Returns what the terminal got. */
async function onTerminal(mode: string, kill?: NodeJS.Signals): Promise<{ output: string; status: number | null }> {
  const pidFile = path.join(dir, `${mode}-${kill ?? "none"}.pid`);
  const cmd = [process.execPath, "--import", "tsx", CHILD, mode, pidFile].map((a) => `'${a}'`).join(" ");
  // stdin stays open: at its end `script` would hang up the terminal before the child is done.
  const child = spawn("script", ["-qfec", cmd, "/dev/null"], { stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d: Buffer) => (output += d.toString("utf8")));
  const done = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  if (kill) {
    while (!existsSync(pidFile) || (await readFile(pidFile, "utf8")) === "") await new Promise((r) => setTimeout(r, 20));
    process.kill(Number(await readFile(pidFile, "utf8")), kill);
  }
  const status = await done;
  return { output, status };
}

/** The bar hid the cursor and turned wrapping off, and both were turned back on after its last frame. */
function assertRestored(output: string): void {
  assert.ok(output.includes(HIDE_CURSOR) && output.includes(WRAP_OFF), "the bar was shown on a terminal");
  const lastFrame = output.lastIndexOf("working [");
  assert.ok(output.indexOf(SHOW_CURSOR, lastFrame) > lastFrame, `cursor shown again: ${JSON.stringify(output.slice(lastFrame))}`);
  assert.ok(output.indexOf(WRAP_ON, lastFrame) > lastFrame, "line wrapping back on");
}

describe("progress bar on a terminal", { skip: hasScript ? false : "util-linux script not installed" }, () => {
  it("restores the terminal on SIGINT and SIGTERM, and still dies of the signal", async () => {
    const [int, term] = await Promise.all([onTerminal("signal", "SIGINT"), onTerminal("signal", "SIGTERM")]);
    assertRestored(int.output);
    assertRestored(term.output);
    // script -e reports a signal death as 128 + signal number.
    assert.equal(int.status, 130);
    assert.equal(term.status, 143);
    assert.match(int.output, /\r?\n$/, "the prompt comes back on a fresh line");
  });

  it("restores the terminal before an error line, and on process.exit", async () => {
    const [error, exit] = await Promise.all([onTerminal("error"), onTerminal("exit")]);
    assertRestored(error.output);
    // Only terminal escape sequences may stand between the last newline and the error line.
    const before = error.output.slice(0, error.output.lastIndexOf("persona: the judge went away [E_JUDGE]"));
    assert.match(before.slice(before.lastIndexOf("\n") + 1).replaceAll(`${String.fromCharCode(27)}[`, ""), /^[0-9;?A-Za-z]*$/, "the error line starts a line of its own");
    assert.match(error.output, /persona: the judge went away \[E_JUDGE\]\r?\n$/);
    assert.equal(error.status, 1);
    assertRestored(exit.output);
    assert.equal(exit.status, 3);
  });
});

describe("ETA", () => {
  it("is hidden until enough is done and enough time has passed, then uses the average rate", () => {
    assert.equal(etaText(0, 0, 100), "", "nothing done: no NaN or Infinity");
    assert.equal(etaText(10_000, 1, 100), "", "under 2 % done");
    assert.equal(etaText(1_000, 50, 100), "", "too early");
    assert.equal(etaText(10_000, 100, 100), "", "finished");
    assert.equal(etaText(60_000, 20, 100), "ETA 4m00s");
    // A burst of completions moves it in proportion, not by orders of magnitude.
    assert.equal(etaText(61_000, 40, 100), "ETA 1m32s");
    // A resumed run's bar starts at its stored work, which is not part of this run's rate.
    assert.equal(etaText(60_000, 60, 100, 40), "ETA 2m00s");
    assert.equal(etaText(60_000, 40, 100, 40), "", "nothing done yet in this run");
  });

  it("formats durations for people", () => {
    assert.equal(formatDuration(12_400), "12s");
    assert.equal(formatDuration(245_000), "4m05s");
    assert.equal(formatDuration(3_720_000), "1h02m");
  });
});
