/**
 * A process showing a progress bar on a terminal, then leaving by the path argv[2] names:
 * `signal` (waits to be killed; its pid is written to argv[3] once the bar is up), `error`
 * (a failure reaching the CLI's error report) or `exit` (process.exit with the bar shown).
 */
import { writeFileSync } from "node:fs";
import { reportFailure } from "../../src/cli/main.js";
import { progress } from "../../src/cli/progress.js";
import { PersonaError } from "../../src/errors.js";

const [mode, pidFile] = process.argv.slice(2);
const bar = progress("working", 100);
bar.tick(3);
// Let the bar draw before leaving.
await new Promise((r) => setTimeout(r, 200));
if (mode === "signal") {
  writeFileSync(pidFile!, String(process.pid));
  setInterval(() => bar.tick(), 50);
} else if (mode === "error") {
  process.exitCode = reportFailure(new PersonaError("E_JUDGE", "the judge went away"));
} else {
  process.exit(3);
}
