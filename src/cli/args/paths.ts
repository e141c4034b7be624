/** Output paths checked before any work starts, so a long run never fails at its last write. */
import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import path from "node:path";
import { PersonaError } from "../../errors.js";

async function statOrUndefined(p: string) {
  return stat(p).catch(() => undefined);
}

/**
 * `file` (given as `flag`) can be written: its directory exists and is writable, and it is not
 * a directory nor, without `force`, an existing file.
 */
export async function checkOutputFile(file: string, flag: string, force = false): Promise<void> {
  const st = await statOrUndefined(file);
  if (st?.isDirectory()) throw new PersonaError("E_BAD_INPUT", `${flag} ${file} is a directory; give a file name`);
  if (st && !force) throw new PersonaError("E_BAD_INPUT", `${file} exists; pass --force to overwrite it`);
  const dir = path.dirname(path.resolve(file));
  const dst = await statOrUndefined(dir);
  if (!dst?.isDirectory()) throw new PersonaError("E_NOT_FOUND", `${flag} ${file}: directory ${path.dirname(file)} does not exist`);
  await access(dir, constants.W_OK).catch(() => {
    throw new PersonaError("E_IO", `${flag} ${file}: directory ${path.dirname(file)} is not writable`);
  });
}
