/**
 * `npm run fuzz [-- --target T[,T…]] [--cases N] [--seed S] [--timeout MS] [--out DIR] [--json]`
 *   Runs every target (or the named ones) through the fork-server and prints, per target, cases
 *   run, clean refusals, runs, aborts, hangs and unexpected errors (stack traces). Reproducers of
 *   failures go to DIR/crashes/<target>-s<seed>-c<case>/ (default DIR: .cache/fuzz). Exit 1 when
 *   anything failed. With --json, one JSON report per target, printed as each target finishes,
 *   and every 500 cases a progress line with the counts so far on stderr.
 * `npm run fuzz -- --repro DIR`
 *   Runs a reproducer's commands through the real `persona` CLI, each in its own process, and says
 *   whether it still crashes (exit 1 if it does).
 * `npm run fuzz -- --list` lists the targets.
 */
import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { USAGE_EXIT_CODE } from "../../src/cli/args/usage.js";
import { REPO_ROOT, fuzzTarget, type TargetReport } from "./campaign.js";
import { TARGETS } from "./targets/index.js";

const { values } = parseArgs({
  options: {
    target: { type: "string" },
    cases: { type: "string", default: "1000" },
    seed: { type: "string", default: "1" },
    timeout: { type: "string", default: "30000" },
    out: { type: "string", default: path.join(REPO_ROOT, ".cache/fuzz") },
    repro: { type: "string" },
    json: { type: "boolean", default: false },
    list: { type: "boolean", default: false },
  },
});

function intFlag(name: string, text: string, min: number): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min) {
    process.stderr.write(`fuzz: --${name} must be an integer ≥ ${min}, got "${text}"\n`);
    process.exit(2);
  }
  return n;
}

/**
 * Runs `persona ARGV` from sources in a fresh process. A signal, a hang, an unexpected error
 * (printed with its stack) or an exit code other than success (0), refusal (1) or usage error
 * (USAGE_EXIT_CODE) is a crash.
 */
function confirm(dir: string, argv: string[], timeoutMs: number): { crashed: boolean; how: string; stderr: string } {
  // tsx by its resolved URL: the reproducer directory (the cwd) may lie outside the repository.
  const r = spawnSync(process.execPath, ["--import", import.meta.resolve("tsx"), path.join(REPO_ROOT, "src/cli/bin.ts"), ...argv], {
    cwd: dir,
    encoding: "utf8",
    timeout: timeoutMs,
    env: { ...process.env, NODE_OPTIONS: "" },
  });
  const how = r.error?.message.includes("ETIMEDOUT") ? "hung" : r.signal ? `killed by ${r.signal}` : `exit code ${r.status}`;
  const unexpected = (r.stderr ?? "").includes("persona: unexpected error");
  const crashed = how === "hung" || r.signal !== null || unexpected || ![0, 1, USAGE_EXIT_CODE].includes(r.status ?? -1);
  return { crashed, how, stderr: (r.stderr ?? "").trim().split("\n").slice(-6).join("\n") };
}

async function repro(dir: string, timeoutMs: number): Promise<number> {
  const info = JSON.parse(await readFile(path.join(dir, "case.json"), "utf8")) as { target: string; kind: string; note: string; commands: string[][] };
  console.log(`${info.target}: recorded ${info.kind}; mutations: ${info.note}`);
  let crashed = false;
  for (const argv of info.commands) {
    const r = confirm(path.resolve(dir), argv, timeoutMs);
    crashed ||= r.crashed;
    console.log(`\n$ persona ${argv.map((a) => (/^[\w./:=,#-]+$/.test(a) ? a : JSON.stringify(a))).join(" ")}\n${r.how}${r.crashed ? "  <-- CRASH" : ""}\n${r.stderr}`);
  }
  console.log(crashed ? "\nstill crashes" : "\nno crash: every command ran or refused cleanly");
  return crashed ? 1 : 0;
}

function line(r: TargetReport): string {
  const cols = [r.target.padEnd(12), String(r.cases).padStart(7), String(r.refused).padStart(8), String(r.ran).padStart(7), String(r.aborts).padStart(7), String(r.timeouts).padStart(6), String(r.unexpected).padStart(11), r.seconds.toFixed(1).padStart(8)];
  return cols.join("  ");
}

async function main(): Promise<number> {
  const timeoutMs = intFlag("timeout", values.timeout, 100);
  if (values.list) {
    for (const t of TARGETS) console.log(`${t.name.padEnd(12)} ${t.description}`);
    return 0;
  }
  if (values.repro) return repro(values.repro, timeoutMs);
  const names = values.target ? values.target.split(",") : TARGETS.map((t) => t.name);
  const targets = names.map((n) => {
    const t = TARGETS.find((x) => x.name === n);
    if (!t) {
      process.stderr.write(`fuzz: unknown target "${n}" (targets: ${TARGETS.map((x) => x.name).join(", ")})\n`);
      process.exit(2);
    }
    return t;
  });
  const opts = { seed: intFlag("seed", values.seed, 0), cases: intFlag("cases", values.cases, 1), timeoutMs, outDir: path.resolve(values.out) };
  const reports: TargetReport[] = [];
  if (!values.json) console.log(`${"target".padEnd(12)}  ${"cases".padStart(7)}  ${"refused".padStart(8)}  ${"ran".padStart(7)}  ${"aborts".padStart(7)}  ${"hangs".padStart(6)}  ${"stacktraces".padStart(11)}  ${"seconds".padStart(8)}`);
  for (const t of targets) {
    const t0 = performance.now();
    const r = await fuzzTarget(t, {
      ...opts,
      onProgress: (name, done, report) => {
        if (!values.json && process.stderr.isTTY && done % 100 === 0) process.stderr.write(`\r${name}: ${done}/${opts.cases}`);
        // A long --json campaign says where it stands, so a run stopped early still has its counts.
        if (values.json && done % 500 === 0) {
          const { failures: _, ...counts } = report;
          process.stderr.write(`${JSON.stringify({ progress: true, seed: opts.seed, ...counts, seconds: (performance.now() - t0) / 1000 })}\n`);
        }
      },
    });
    if (!values.json && process.stderr.isTTY) process.stderr.write("\r\x1b[K");
    reports.push(r);
    if (values.json) console.log(JSON.stringify({ seed: opts.seed, ...r }));
    else {
      console.log(line(r));
      for (const f of r.failures) console.log(`    case ${f.index}: ${f.kind}: ${f.detail.split("\n").find((l) => l.trim()) ?? ""}\n      reproducer: ${path.relative(process.cwd(), f.dir)}`);
    }
  }
  return reports.some((r) => r.failures.length > 0) ? 1 : 0;
}

process.exitCode = await main();
