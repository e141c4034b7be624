/** A progress bar with ETA on stderr, only when stderr is a terminal (never in pipes or CI logs). */
import cliProgress from "cli-progress";

export interface Progress {
  tick(n?: number): void;
  stop(): void;
}

export function progress(label: string, total: number): Progress {
  if (!process.stderr.isTTY || total <= 1) return { tick() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {value}/{total} {percentage}% | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0);
  return {
    tick: (n = 1) => bar.increment(n),
    stop: () => bar.stop(),
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
