import { readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

/** The bytes a writer that only writes to paths produces (the project's writers are atomic file writers). */
export async function bytesWrittenBy(ext: string, write: (file: string) => Promise<void>): Promise<Uint8Array> {
  const file = path.join(tmpdir(), `fuzz-${process.pid}-${Math.random().toString(36).slice(2)}${ext}`);
  try {
    await write(file);
    return await readFile(file);
  } finally {
    await rm(file, { force: true });
  }
}
