import { randomBytes } from "node:crypto";
import { open, rename, unlink, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** What to write: text (UTF-8), bytes, or a function that writes through the open file (streaming). */
export type FileContent = string | Uint8Array | ((file: FileHandle) => Promise<void>);

/**
 * Writes to a temp file beside `path`, fsyncs, then renames over it: a reader sees the old file or
 * the complete new one, never a torn write, and a crash leaves no half-written file at `path`.
 */
export async function writeFileAtomic(path: string, content: FileContent): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  const fh = await open(tmp, "w");
  try {
    if (typeof content === "function") await content(fh);
    else await fh.writeFile(content);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  // Persist the rename itself; some platforms cannot open a directory, which is harmless to skip.
  const dir = await open(dirname(path), "r").catch(() => undefined);
  await dir?.sync().catch(() => undefined);
  await dir?.close();
}
