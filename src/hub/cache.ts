/**
 * The Hugging Face hub's standard cache layout, shared with huggingface_hub, llama.cpp's `-hf`
 * and other hub tools, so a file any of them downloaded is found here and vice versa:
 *
 *   $HF_HUB_CACHE/models--OWNER--NAME/
 *     blobs/<etag>                     file contents; etag = sha256 for LFS files, git blob id otherwise
 *     refs/<revision>                  commit hash a branch or tag pointed at when last resolved
 *     snapshots/<commit>/<path>        relative symlink to ../../blobs/<etag>
 *
 * HF_HUB_CACHE defaults to $HF_HOME/hub, HF_HOME to $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface.
 */
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { mkdir, readlink, rename, symlink, unlink, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";

export interface HubEnv {
  /** Root of the cache (`HF_HUB_CACHE`). */
  cacheDir: string;
  /** Hub base URL (`HF_ENDPOINT`), no trailing slash. */
  endpoint: string;
  /** Access token (`HF_TOKEN`, else the token file huggingface-cli writes), or undefined. */
  token: string | undefined;
  /** `HF_HUB_OFFLINE`: never touch the network. */
  offline: boolean;
}

const TRUE = new Set(["1", "true", "yes", "on"]);

/** Reads the hub settings from the environment, as huggingface_hub does. */
export function hubEnv(env: NodeJS.ProcessEnv = process.env): HubEnv {
  const home = env.HF_HOME || path.join(env.XDG_CACHE_HOME || path.join(homedir(), ".cache"), "huggingface");
  const cacheDir = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE || path.join(home, "hub");
  const endpoint = (env.HF_ENDPOINT || "https://huggingface.co").replace(/\/+$/, "");
  let token = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN || undefined;
  if (token === undefined) {
    const file = env.HF_TOKEN_PATH || path.join(home, "token");
    if (existsSync(file)) token = readFileSync(file, "utf8").trim() || undefined;
  }
  return { cacheDir, endpoint, token, offline: TRUE.has((env.HF_HUB_OFFLINE ?? "").toLowerCase()) };
}

/** `models--OWNER--NAME` under the cache root. */
export function repoCacheDir(cacheDir: string, repo: string): string {
  return path.join(cacheDir, `models--${repo.split("/").join("--")}`);
}

export function blobPath(repoDir: string, etag: string): string {
  return path.join(repoDir, "blobs", etag);
}

export function snapshotPath(repoDir: string, commit: string, file: string): string {
  return path.join(repoDir, "snapshots", commit, ...file.split("/"));
}

const COMMIT_RE = /^[0-9a-f]{40}$/;

/** The commit a revision names in the cache: itself when it is a commit hash, else refs/<revision>. */
export function cachedCommit(repoDir: string, revision: string): string | undefined {
  if (COMMIT_RE.test(revision)) return existsSync(path.join(repoDir, "snapshots", revision)) ? revision : undefined;
  const ref = path.join(repoDir, "refs", ...revision.split("/"));
  if (!existsSync(ref)) return undefined;
  const commit = readFileSync(ref, "utf8").trim();
  return COMMIT_RE.test(commit) ? commit : undefined;
}

/** Every file path in a cached snapshot, relative and with `/` separators. */
export function snapshotFiles(repoDir: string, commit: string): string[] {
  const root = path.join(repoDir, "snapshots", commit);
  if (!existsSync(root)) return [];
  return (readdirSync(root, { recursive: true, withFileTypes: true }) as import("node:fs").Dirent[])
    .filter((d) => d.isFile() || d.isSymbolicLink())
    .map((d) => path.relative(root, path.join(d.parentPath ?? d.path, d.name)).split(path.sep).join("/"))
    .filter((f) => existsSync(path.join(root, f)))
    .sort();
}

export async function writeRef(repoDir: string, revision: string, commit: string): Promise<void> {
  if (revision === commit) return;
  const ref = path.join(repoDir, "refs", ...revision.split("/"));
  await mkdir(path.dirname(ref), { recursive: true });
  const tmp = `${ref}.${process.pid}.tmp`;
  await writeFile(tmp, commit);
  await rename(tmp, ref);
}

/** Points snapshots/<commit>/<file> at its blob with a relative symlink, as huggingface_hub does. */
export async function linkSnapshot(repoDir: string, commit: string, file: string, etag: string): Promise<string> {
  const pointer = snapshotPath(repoDir, commit, file);
  const target = path.relative(path.dirname(pointer), blobPath(repoDir, etag));
  await mkdir(path.dirname(pointer), { recursive: true });
  const current = await readlink(pointer).catch(() => undefined);
  if (current === target) return pointer;
  if (current !== undefined || existsSync(pointer)) await unlink(pointer);
  await symlink(target, pointer);
  return pointer;
}
