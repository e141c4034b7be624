/**
 * `hf:OWNER/NAME[:QUANT|/FILE]` → GGUF file(s) in the hub cache. Lists the repo through the hub's
 * API (sizes and sha256 of every file), picks the GGUF the user named — a quantisation tag such
 * as Q4_K_M, a file path, or the only/default one — with every part of a split GGUF
 * (`-00001-of-00003.gguf`), downloads what the cache lacks and returns the path llama.cpp opens
 * (the first part of a split; llama.cpp finds the others beside it).
 */
import { existsSync } from "node:fs";
import { PersonaError } from "../errors.js";
import { type HubEnv, cachedCommit, hubEnv, linkSnapshot, repoCacheDir, snapshotFiles, snapshotPath, writeRef } from "./cache.js";
import { type DownloadProgress, type RemoteFile, downloadBlob } from "./download.js";
import { type HubRequest, hubFetch } from "./http.js";

export interface HubRef {
  /** `OWNER/NAME`. */
  repo: string;
  /** Quantisation tag, e.g. `Q4_K_M` (matched case-insensitively against file names). */
  quant?: string;
  /** File path inside the repo. */
  file?: string;
}

export interface PullOptions {
  /** Branch, tag or commit. Defaults to `main`. */
  revision?: string;
  /** Use only the local cache. Defaults to HF_HUB_OFFLINE. */
  offline?: boolean;
  /** Hub settings. Defaults to the environment's (`hubEnv()`). */
  env?: HubEnv;
  onProgress?: (p: DownloadProgress) => void;
}

export interface PullResult {
  repo: string;
  commit: string;
  /** Snapshot paths of every file fetched (all parts of a split). */
  files: string[];
  /** The file to load: the GGUF, or the first part of a split. */
  modelPath: string;
  /** Bytes downloaded now (0 when everything was cached). */
  downloaded: number;
}

const COMMIT_RE = /^[0-9a-f]{40}$/;
/** A git blob id (sha1) or an LFS sha256: also the blob's file name in the cache, so nothing else may pass. */
const ETAG_RE = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

/**
 * The listing's entry for a file about to be fetched, checked before its name, etag and size
 * decide where it is written and how much is read: the hub never lists such values, a broken
 * mirror or proxy might.
 */
function checkRemote(repo: string, f: RemoteFile): void {
  const segments = f.path.split("/");
  if (f.path.includes("\\") || segments.some((p) => p === "" || p === "." || p === "..")) {
    throw new PersonaError("E_NETWORK", `${repo}: the hub's listing names the file ${JSON.stringify(f.path)}, which is not a plain relative path`);
  }
  if (!Number.isSafeInteger(f.size) || f.size < 0) throw new PersonaError("E_NETWORK", `${repo}: the hub's listing gives ${f.path} the size ${f.size}, not a byte count`);
  if (!ETAG_RE.test(f.etag)) throw new PersonaError("E_NETWORK", `${repo}: the hub's listing gives ${f.path} the blob id ${JSON.stringify(f.etag).slice(0, 80)}, not a sha1 or sha256 hex digest`);
  if (f.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(f.sha256)) throw new PersonaError("E_NETWORK", `${repo}: the hub's listing gives ${f.path} the sha256 ${JSON.stringify(f.sha256).slice(0, 80)}, not a sha256 hex digest`);
}

const REPO_RE = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/;
const SPLIT_RE = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/i;
/** Tried in order when no quantisation is named and the repo has several GGUFs (llama.cpp's `-hf` default first). */
const DEFAULT_QUANTS = ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q8_0", "Q4_0"];

/** Parses `OWNER/NAME[:QUANT]` or `OWNER/NAME/PATH/FILE.gguf` (an `hf:` prefix is allowed). */
export function parseHubRef(text: string): HubRef {
  const spec = text.replace(/^hf:/, "");
  const colon = spec.indexOf(":");
  const head = colon < 0 ? spec : spec.slice(0, colon);
  const quant = colon < 0 ? undefined : spec.slice(colon + 1);
  const parts = head.split("/");
  const repo = parts.slice(0, 2).join("/");
  const file = parts.length > 2 ? parts.slice(2).join("/") : undefined;
  if (!REPO_RE.test(repo) || (quant !== undefined && !/^[\w.-]+$/.test(quant)) || (file !== undefined && quant !== undefined) || file === "") {
    throw new PersonaError("E_BAD_INPUT", `"${text}" is not a hub model reference; expected OWNER/NAME, OWNER/NAME:QUANT (e.g. Qwen/Qwen2.5-7B-Instruct-GGUF:Q4_K_M) or OWNER/NAME/FILE.gguf`);
  }
  return { repo, ...(quant !== undefined ? { quant } : {}), ...(file !== undefined ? { file } : {}) };
}

/** The files to fetch for a reference, from the repo's file list: one GGUF, or every part of a split. */
export function selectGguf(all: readonly string[], ref: HubRef): string[] {
  const ggufs = all.filter((f) => /\.gguf$/i.test(f) && !/(^|\/)mmproj/i.test(f));
  const groups = new Map<string, string[]>();
  for (const f of ggufs) {
    const m = SPLIT_RE.exec(f);
    const key = m ? `${m[1]}.gguf` : f;
    groups.set(key, [...(groups.get(key) ?? []), f]);
  }
  const describe = (): string => [...groups.keys()].join(", ") || "none";
  let chosen: string[];
  if (ref.file !== undefined) {
    const key = [...groups].find(([k, parts]) => k === ref.file || parts.includes(ref.file!))?.[0];
    if (key === undefined) {
      if (all.includes(ref.file)) throw new PersonaError("E_BAD_INPUT", `${ref.repo}/${ref.file} is not a GGUF file`);
      throw new PersonaError("E_NOT_FOUND", `${ref.repo} has no file ${ref.file} (GGUF files: ${describe()})`);
    }
    chosen = [key];
  } else if (ref.quant !== undefined) {
    chosen = matchQuant([...groups.keys()], ref.quant);
    if (chosen.length === 0) throw new PersonaError("E_NOT_FOUND", `${ref.repo} has no GGUF with ${ref.quant} in its name (GGUF files: ${describe()})`);
  } else if (groups.size === 1) {
    chosen = [...groups.keys()];
  } else {
    chosen = [];
    for (const q of DEFAULT_QUANTS) {
      chosen = matchQuant([...groups.keys()], q);
      if (chosen.length > 0) break;
    }
    if (chosen.length === 0) {
      throw new PersonaError("E_BAD_INPUT", `${ref.repo} has ${groups.size} GGUF files; name one as ${ref.repo}:QUANT or ${ref.repo}/FILE (GGUF files: ${describe()})`);
    }
  }
  if (chosen.length > 1) throw new PersonaError("E_BAD_INPUT", `${ref.repo}: "${ref.quant}" matches ${chosen.join(", ")}; name the file as ${ref.repo}/FILE`);
  const parts = [...groups.get(chosen[0]!)!].sort();
  const m = SPLIT_RE.exec(parts[0]!);
  if (m && parts.length !== Number(m[3])) {
    throw new PersonaError("E_NOT_FOUND", `${ref.repo}: split GGUF ${chosen[0]} should have ${Number(m[3])} parts, the repo has ${parts.length}`);
  }
  return parts;
}

function matchQuant(keys: readonly string[], quant: string): string[] {
  const q = quant.toLowerCase().replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const re = new RegExp(`(^|[-._/])${q}([-._]|$)`, "i");
  return keys.filter((k) => re.test(k.replace(/\.gguf$/i, "")));
}

interface Sibling {
  rfilename: string;
  size?: number;
  blobId?: string;
  lfs?: { sha256?: string; oid?: string; size?: number };
}

async function listRepo(req: HubRequest, revision: string): Promise<{ commit: string; files: Map<string, RemoteFile> }> {
  const url = `${req.endpoint}/api/models/${req.repo}/revision/${encodeURIComponent(revision)}?blobs=true`;
  const res = await hubFetch(req, url);
  const body = (await res.json().catch(() => null)) as { sha?: unknown; siblings?: unknown } | null;
  if (!body || typeof body.sha !== "string" || !Array.isArray(body.siblings)) {
    throw new PersonaError("E_NETWORK", `${req.repo}: the hub's file listing is not what was expected (${url})`);
  }
  if (!COMMIT_RE.test(body.sha)) throw new PersonaError("E_NETWORK", `${req.repo}: the hub's file listing gives the commit ${JSON.stringify(body.sha).slice(0, 80)}, not a 40-hex-digit hash (${url})`);
  const files = new Map<string, RemoteFile>();
  for (const s of body.siblings as (Sibling | null)[]) {
    if (typeof s !== "object" || s === null) continue;
    const sha256 = s.lfs?.sha256 ?? s.lfs?.oid;
    const size = s.lfs?.size ?? s.size;
    const etag = sha256 ?? s.blobId;
    if (typeof s.rfilename !== "string" || typeof size !== "number" || typeof etag !== "string") continue;
    files.set(s.rfilename, { path: s.rfilename, size, etag, ...(sha256 !== undefined ? { sha256 } : {}) });
  }
  return { commit: body.sha, files };
}

/** Downloads (or finds in the cache) the GGUF a reference names. */
export async function pullModel(ref: HubRef | string, opts: PullOptions = {}): Promise<PullResult> {
  const r = typeof ref === "string" ? parseHubRef(ref) : ref;
  const env = opts.env ?? hubEnv();
  const revision = opts.revision ?? "main";
  const repoDir = repoCacheDir(env.cacheDir, r.repo);
  if (opts.offline ?? env.offline) {
    const commit = cachedCommit(repoDir, revision);
    if (commit === undefined) {
      throw new PersonaError("E_NOT_FOUND", `offline: ${r.repo}@${revision} is not in the hub cache ${env.cacheDir}; run \`persona pull ${r.repo}\` with network first`);
    }
    const parts = selectGguf(snapshotFiles(repoDir, commit), r);
    const files = parts.map((f) => snapshotPath(repoDir, commit, f));
    return { repo: r.repo, commit, files, modelPath: files[0]!, downloaded: 0 };
  }
  const req: HubRequest = { endpoint: env.endpoint, token: env.token, repo: r.repo };
  const listing = await listRepo(req, revision);
  const parts = selectGguf([...listing.files.keys()], r);
  const files: string[] = [];
  let downloaded = 0;
  for (const name of parts) {
    const remote = listing.files.get(name)!;
    checkRemote(r.repo, remote);
    const pointer = snapshotPath(repoDir, listing.commit, name);
    if (!existsSync(pointer)) {
      const url = `${env.endpoint}/${r.repo}/resolve/${listing.commit}/${name.split("/").map(encodeURIComponent).join("/")}`;
      const before = existsSync(`${repoDir}/blobs/${remote.etag}`);
      await downloadBlob(req, url, repoDir, remote, opts.onProgress);
      if (!before) downloaded += remote.size;
      await linkSnapshot(repoDir, listing.commit, name, remote.etag);
    }
    files.push(pointer);
  }
  await writeRef(repoDir, revision, listing.commit);
  return { repo: r.repo, commit: listing.commit, files, modelPath: files[0]!, downloaded };
}
