/**
 * A progress bar with ETA on stderr, only when stderr is a terminal (never in pipes or CI logs).
 * While one is shown the cursor is hidden and line wrapping is off; every exit path puts the
 * terminal back: stop(), an error reaching main (`stopAllProgress`), SIGINT/SIGTERM (restored,
 * then the signal is raised again so the exit status stays the conventional one) and exit.
 */
import cliProgress from "cli-progress";
import type { EvalProgress } from "../pipeline/evaluate.js";

export interface Progress {
  tick(n?: number): void;
  stop(): void;
}

/** The ETA is hidden until this share of the work is done and this much time has passed. */
const ETA_MIN_FRACTION = 0.02;
const ETA_MIN_MS = 3000;

/** "1h02m", "4m05s", "12s". */
export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

/**
 * Time left at the run's average rate so far (steady where a recent-window rate jumps with
 * bursty work such as batched judging), or "" while too little is done for it to mean anything.
 * `start` is what was already done when the bar started (a resumed run's stored work): the rate
 * counts only the work done since.
 */
export function etaText(elapsedMs: number, done: number, total: number, start = 0): string {
  const now = done - start;
  const left = total - start;
  if (now <= 0 || done >= total || now < left * ETA_MIN_FRACTION || elapsedMs < ETA_MIN_MS) return "";
  return `ETA ${formatDuration((elapsedMs / now) * (total - done))}`;
}

const active = new Set<cliProgress.SingleBar>();

/** Stops every bar still shown, restoring the cursor and line wrapping. */
export function stopAllProgress(): void {
  for (const bar of [...active]) {
    active.delete(bar);
    bar.stop();
  }
  uninstall();
}

const SIGNALS = ["SIGINT", "SIGTERM"] as const;

function onSignal(signal: NodeJS.Signals): void {
  stopAllProgress();
  process.kill(process.pid, signal);
}

let installed = false;
function install(): void {
  if (installed) return;
  installed = true;
  for (const s of SIGNALS) process.on(s, onSignal);
  process.on("exit", stopAllProgress);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  for (const s of SIGNALS) process.off(s, onSignal);
  process.off("exit", stopAllProgress);
}

/** A bar over `total` items, `start` of them already done (a resumed run's). */
export function progress(label: string, total: number, start = 0): Progress {
  if (!process.stderr.isTTY || total <= 1) return { tick() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      format: (options, params) => {
        const eta = etaText(Date.now() - params.startTime, params.value, params.total, start);
        const pct = Math.floor(params.progress * 100);
        return `${label} [${cliProgress.Format.BarFormat(params.progress, options)}] ${params.value}/${params.total} ${pct}%${eta ? ` | ${eta}` : ""}`;
      },
      stream: process.stderr,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  install();
  active.add(bar);
  bar.start(total, start);
  return {
    tick: (n = 1) => bar.increment(n),
    stop: () => {
      if (!active.delete(bar)) return;
      bar.stop();
      if (active.size === 0) uninstall();
    },
  };
}

/** A per-file download bar in MiB on stderr (terminals only), for the hub's `onProgress`. */
export function downloadProgress(): (p: { file: string; received: number; total: number }) => void {
  let bar: cliProgress.SingleBar | undefined;
  let current: string | undefined;
  const mib = (n: number) => (n / 2 ** 20).toFixed(1);
  return (p) => {
    if (!process.stderr.isTTY) return;
    if (p.file !== current || bar === undefined) {
      bar?.stop();
      current = p.file;
      bar = new cliProgress.SingleBar(
        {
          format: `${p.file} [{bar}] {value}/{total} MiB {percentage}% | ETA {eta_formatted}`,
          formatValue: (v, _o, type) => (type === "value" || type === "total" ? mib(v) : String(v)),
          stream: process.stderr,
          hideCursor: true,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(p.total, p.received);
    }
    bar!.update(p.received);
    if (p.received >= p.total) {
      bar!.stop();
      bar = undefined;
    }
  };
}

/**
 * A progress bar over judged rollouts, created on the first report (when the total is known), at
 * what that report says is done (a resumed run's stored rollouts).
 */
export function rolloutProgress(label: string): { update(p: Pick<EvalProgress, "judged" | "total">): void; stop(): void } {
  let bar: Progress | undefined;
  let shown = 0;
  return {
    update(p) {
      if (!bar) {
        bar = progress(label, p.total, p.judged);
        shown = p.judged;
      }
      if (p.judged > shown) bar.tick(p.judged - shown);
      shown = p.judged;
    },
    stop: () => bar?.stop(),
  };
}
