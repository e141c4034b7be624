/**
 * One file from the hub into the cache: GET the resolve URL (the hub redirects large files to a
 * CDN), append to `blobs/<etag>.incomplete` — resuming with an HTTP Range request after a cut —
 * then check size and sha256 against the hub's metadata before the blob takes its final name.
 */
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { mkdir, open, rename, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { PersonaError } from "../errors.js";
import { blobPath } from "./cache.js";
import { type HubRequest, hubFetch } from "./http.js";

export interface RemoteFile {
  /** Path in the repo, e.g. `qwen2.5-7b-instruct-q4_k_m.gguf`. */
  path: string;
  size: number;
  /** Blob name in the cache: the LFS sha256, else the git blob id. */
  etag: string;
  /** Content sha256 for LFS files (every GGUF); checked after download. */
  sha256?: string;
}

export interface DownloadProgress {
  file: string;
  received: number;
  total: number;
}

/** How many times a cut transfer is resumed before giving up. */
const MAX_RESUMES = 5;

export async function downloadBlob(
  req: HubRequest,
  url: string,
  repoDir: string,
  file: RemoteFile,
  onProgress?: (p: DownloadProgress) => void,
): Promise<string> {
  const blob = blobPath(repoDir, file.etag);
  if (existsSync(blob)) return blob;
  await mkdir(path.dirname(blob), { recursive: true });
  const partial = `${blob}.incomplete`;
  let resumes = 0;
  for (;;) {
    // No partial file yet is not "0 bytes so far": an empty file still has to be fetched (and created).
    const have = await stat(partial).then(
      (s) => s.size,
      () => undefined,
    );
    if (have !== undefined && have > file.size) await unlink(partial);
    else if (have === file.size) break;
    try {
      await fetchInto(req, url, partial, have === undefined || have > file.size ? 0 : have, file, onProgress);
    } catch (e) {
      if (e instanceof PersonaError) throw e;
      if (++resumes > MAX_RESUMES) {
        throw new PersonaError("E_NETWORK", `${file.path}: the transfer broke off ${MAX_RESUMES + 1} times (last: ${(e as Error).message}); run again to resume it`, { cause: e });
      }
      continue; // a cut transfer: resume from what arrived
    }
    const got = (await stat(partial)).size;
    if (got === file.size) break;
    if (++resumes > MAX_RESUMES) throw new PersonaError("E_NETWORK", `${file.path}: transfer stopped at ${got} of ${file.size} bytes after ${MAX_RESUMES} resumes`);
  }
  if (file.sha256 !== undefined) {
    const digest = await sha256File(partial);
    if (digest !== file.sha256) {
      await unlink(partial);
      throw new PersonaError("E_BAD_MODEL", `${file.path}: sha256 ${digest} does not match the hub's ${file.sha256}; the partial download was deleted, run again`);
    }
  }
  await rename(partial, blob);
  return blob;
}

async function fetchInto(req: HubRequest, url: string, partial: string, from: number, file: RemoteFile, onProgress?: (p: DownloadProgress) => void): Promise<void> {
  const res = await hubFetch(req, url, from > 0 ? { Range: `bytes=${from}-` } : {});
  const linked = res.linked;
  if (linked?.etag !== undefined && linked.etag !== file.etag) {
    await res.body?.cancel();
    throw new PersonaError("E_BAD_MODEL", `${file.path}: the hub's ETag ${linked.etag} differs from its listing's ${file.etag}`);
  }
  let offset = from;
  if (from > 0 && res.status === 200) offset = 0; // the server ignored the range: start over
  else if (from > 0 && res.status !== 206) throw new PersonaError("E_NETWORK", `${file.path}: resume answered HTTP ${res.status}`);
  if (from > 0 && res.status === 206) {
    const m = /^bytes (\d+)-/.exec(res.headers.get("content-range") ?? "");
    if (!m || Number(m[1]) !== from) throw new PersonaError("E_NETWORK", `${file.path}: resume got range "${res.headers.get("content-range")}", asked for ${from}-`);
  }
  const fh = await open(partial, offset === 0 ? "w" : "a");
  try {
    onProgress?.({ file: file.path, received: offset, total: file.size });
    if (!res.body) throw new PersonaError("E_NETWORK", `${file.path}: the server sent no body`);
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      if (offset + chunk.length > file.size) throw new PersonaError("E_BAD_MODEL", `${file.path}: the server sent more than the ${file.size} bytes the hub lists`);
      await fh.write(chunk);
      offset += chunk.length;
      onProgress?.({ file: file.path, received: offset, total: file.size });
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest("hex");
}
