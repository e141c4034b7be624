/**
 * Fork-server campaign (libFuzzer's fork mode, in small): a child process runs many cases of a
 * target in-process; if it dies by a signal, hangs past the timeout, or reports an unexpected
 * error, the announced case gets the blame, its reproducer is rebuilt here from the case's seed
 * and written out, and a fresh child carries on after it.
 */
import { spawn } from "node:child_process";
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { caseRng } from "./rng.js";
import type { Target } from "./target.js";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SERVER = path.join(REPO_ROOT, "scripts/fuzz/server.ts");
const STARTUP_MS = 120_000;

export type FailureKind = "abort" | "timeout" | "unexpected";

export interface Failure {
  index: number;
  kind: FailureKind;
  detail: string;
  /** Reproducer directory. */
  dir: string;
}

export interface TargetReport {
  target: string;
  cases: number;
  ran: number;
  refused: number;
  aborts: number;
  timeouts: number;
  unexpected: number;
  /** Refusals by error code (USAGE = a command-line usage error). */
  refusedBy: Record<string, number>;
  /** Fork-server children started (1 + one per abort or timeout). */
  children: number;
  seconds: number;
  failures: Failure[];
}

export interface CampaignOptions {
  seed: number;
  cases: number;
  /** Per-case limit before the child is killed and the case counted as a hang. */
  timeoutMs: number;
  /** Reproducers go to OUT/crashes, scratch files to OUT/work. */
  outDir: string;
  onProgress?: (target: string, done: number, report: TargetReport) => void;
}

export async function fuzzTarget(target: Target, o: CampaignOptions): Promise<TargetReport> {
  const t0 = performance.now();
  const report: TargetReport = {
    target: target.name, cases: 0, ran: 0, refused: 0, aborts: 0, timeouts: 0, unexpected: 0, refusedBy: {}, children: 0, seconds: 0, failures: [],
  };
  const workDir = path.resolve(o.outDir, "work");
  await mkdir(workDir, { recursive: true });
  let seedState: unknown;
  const fail = async (index: number, kind: FailureKind, detail: string): Promise<void> => {
    report[kind === "abort" ? "aborts" : kind === "timeout" ? "timeouts" : "unexpected"]++;
    seedState ??= await target.setup();
    const dir = await writeReproducer(target, o, index, kind, detail, seedState);
    report.failures.push({ index, kind, detail, dir });
  };

  let next = 0;
  while (next < o.cases) {
    report.children++;
    const result = await runChild(target.name, o, next, workDir, async (line) => {
      const [tag, idx, kind, ...rest] = line.split(" ");
      if (tag !== "E") return;
      const index = Number(idx);
      const detail = rest.join(" ") ? (JSON.parse(rest.join(" ")) as string) : "";
      report.cases++;
      if (kind === "ran") report.ran++;
      else if (kind === "refused") {
        report.refused++;
        report.refusedBy[detail] = (report.refusedBy[detail] ?? 0) + 1;
      } else await fail(index, "unexpected", detail);
      next = index + 1;
      o.onProgress?.(target.name, report.cases, report);
    });
    if (result.open === undefined) {
      if (next < o.cases) {
        throw new Error(`fuzz child for ${target.name} exited (${result.exit}) between cases; stderr:\n${result.stderr}`);
      }
      break;
    }
    report.cases++;
    // The assert or exception line, when native code printed one, says more than the signal.
    const cause = result.stderr.split("\n").find((l) => /GGML_ASSERT|GGML_ABORT|terminate called|what\(\)|Segmentation/.test(l));
    await fail(result.open, result.timedOut ? "timeout" : "abort", `${result.exit}${cause ? `: ${cause.trim()}` : ""}\n${result.stderr}`);
    next = result.open + 1;
    o.onProgress?.(target.name, report.cases, report);
  }
  report.seconds = (performance.now() - t0) / 1000;
  return report;
}

interface ChildResult {
  /** The case announced and not finished when the child went away. */
  open: number | undefined;
  timedOut: boolean;
  exit: string;
  stderr: string;
}

function runChild(target: string, o: CampaignOptions, start: number, workDir: string, onLine: (l: string) => Promise<void>): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", SERVER, target, String(o.seed), String(start), String(o.cases), workDir], {
      cwd: REPO_ROOT,
      stdio: ["ignore", "ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-6000);
    });
    let open: number | undefined;
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const arm = (ms: number) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        child.kill("SIGKILL");
      }, ms);
    };
    arm(STARTUP_MS);
    let buf = "";
    // Lines are handled strictly in order (a failure writes a reproducer before the next line counts).
    let chain = Promise.resolve();
    child.stdio[3]!.on("data", (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split("\n");
      buf = lines.pop()!;
      for (const line of lines) {
        if (line.startsWith("B ")) {
          open = Number(line.slice(2));
          arm(o.timeoutMs);
        } else if (line.startsWith("E ")) {
          open = undefined;
          arm(o.timeoutMs);
        }
        chain = chain.then(() => onLine(line));
      }
    });
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (timedOut && open === undefined) {
        chain.then(() => reject(new Error(`fuzz child for ${target} did not start within ${STARTUP_MS / 1000} s; stderr:\n${stderr}`)), reject);
        return;
      }
      const exit = signal ? `killed by ${signal}` : `exit code ${code}`;
      chain.then(() => resolve({ open, timedOut, exit, stderr: stderr.slice(-3000) }), reject);
    });
  });
}

async function writeReproducer(target: Target, o: CampaignOptions, index: number, kind: FailureKind, detail: string, state: unknown): Promise<string> {
  const dir = path.resolve(o.outDir, "crashes", `${target.name}-s${o.seed}-c${index}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const c = await target.make(caseRng(target.name, o.seed, index), state);
  for (const [name, data] of Object.entries(c.files)) {
    await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await writeFile(path.join(dir, name), data);
  }
  const info = { target: target.name, seed: o.seed, index, kind, detail, note: c.note, commands: c.commands };
  await writeFile(path.join(dir, "case.json"), `${JSON.stringify(info, null, 2)}\n`);
  return dir;
}
