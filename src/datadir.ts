/**
 * The user's data directory: where the tool writes what outlives a run (registered vectors,
 * best layers found by a sweep), so files shipped with the package or a model are never rewritten.
 * `PERSONA_DATA_DIR`, else `$XDG_DATA_HOME/persona-vectors`, else `~/.local/share/persona-vectors`.
 */
import { homedir } from "node:os";
import path from "node:path";

export function userDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.PERSONA_DATA_DIR) return path.resolve(env.PERSONA_DATA_DIR);
  // The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
  const xdg = env.XDG_DATA_HOME && path.isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : path.join(homedir(), ".local", "share");
  return path.join(xdg, "persona-vectors");
}
