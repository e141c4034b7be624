import { access } from "node:fs/promises";
import { PersonaError } from "../../errors.js";

/** An `--out` file that exists is kept unless `--force` says otherwise. */
export async function refuseOverwrite(path: string, force: boolean | undefined): Promise<void> {
  if (force) return;
  const exists = await access(path).then(
    () => true,
    () => false,
  );
  if (exists) throw new PersonaError("E_BAD_INPUT", `${path} exists; pass --force to overwrite it`);
}
