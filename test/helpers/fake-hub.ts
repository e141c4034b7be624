import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A real HTTP server on 127.0.0.1:0 that behaves like the Hugging Face hub for downloads:
 * `GET /api/models/OWNER/NAME/revision/REV` lists files (sizes, LFS sha256), `/OWNER/NAME/resolve/
 * REV/FILE` answers 302 to a CDN path with `X-Linked-Etag`/`X-Linked-Size`/`X-Repo-Commit`, the CDN
 * honours Range requests. Gated repos answer 401 without the right token, unknown repos and files
 * 404 with the hub's `X-Error-Code`. `cutAfter` makes the CDN drop the connection mid-transfer.
 */
export interface FakeRepo {
  files: Record<string, Uint8Array>;
  /** Token required (401 without it, with X-Error-Code GatedRepo). */
  gatedToken?: string;
  commit?: string;
}

export interface FakeHub {
  origin: string;
  /** Every request: method, path, range and authorization headers. */
  log: { method: string; path: string; range?: string; auth?: string }[];
  /** Next CDN transfer of this file sends only this many bytes, then drops the connection. */
  cutAfter: Map<string, number>;
  /** Serve these bytes instead of the listed file (a corrupt CDN). */
  corrupt: Map<string, Uint8Array>;
  close(): Promise<void>;
}

export const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

export async function startFakeHub(repos: Record<string, FakeRepo>): Promise<FakeHub> {
  const log: FakeHub["log"] = [];
  const cutAfter = new Map<string, number>();
  const corrupt = new Map<string, Uint8Array>();
  const commitOf = (repo: string) => repos[repo]!.commit ?? sha256(Buffer.from(repo)).slice(0, 40);
  const blobs = new Map<string, { name: string; data: Uint8Array }>();
  for (const r of Object.values(repos)) for (const [name, data] of Object.entries(r.files)) blobs.set(sha256(data), { name, data });

  const fail = (res: ServerResponse, status: number, code: string) => {
    res.writeHead(status, { "x-error-code": code, "content-type": "application/json" });
    res.end(JSON.stringify({ error: code }));
  };
  const gate = (req: IncomingMessage, res: ServerResponse, repo: string): boolean => {
    const r = repos[repo];
    if (!r) {
      fail(res, 404, "RepoNotFound");
      return false;
    }
    if (r.gatedToken !== undefined && req.headers.authorization !== `Bearer ${r.gatedToken}`) {
      fail(res, 401, "GatedRepo");
      return false;
    }
    return true;
  };

  let cdnOrigin = "";
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url!, "http://x");
    log.push({ method: req.method!, path: url.pathname, ...(req.headers.range ? { range: req.headers.range } : {}), ...(req.headers.authorization ? { auth: req.headers.authorization } : {}) });
    let m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname);
    if (m) {
      const repo = m[1]!;
      if (!gate(req, res, repo)) return;
      const rev = decodeURIComponent(m[2]!);
      if (rev !== "main" && rev !== commitOf(repo)) return fail(res, 404, "RevisionNotFound");
      const siblings = Object.entries(repos[repo]!.files).map(([name, data]) => ({
        rfilename: name,
        size: data.length,
        blobId: sha256(data).slice(0, 40),
        lfs: { sha256: sha256(data), size: data.length, pointerSize: 134 },
      }));
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id: repo, sha: commitOf(repo), siblings }));
      return;
    }
    m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (m) {
      const repo = m[1]!;
      if (!gate(req, res, repo)) return;
      const file = decodeURIComponent(m[3]!);
      const data = repos[repo]!.files[file];
      if (!data) return fail(res, 404, "EntryNotFound");
      res.writeHead(302, {
        location: `${cdnOrigin}/cdn/${sha256(data)}?signed=1`,
        "x-repo-commit": commitOf(repo),
        "x-linked-etag": `"${sha256(data)}"`,
        "x-linked-size": String(data.length),
        etag: `"${sha256(data).slice(0, 40)}"`,
      });
      res.end();
      return;
    }
    m = /^\/cdn\/([0-9a-f]{64})$/.exec(url.pathname);
    if (m && blobs.has(m[1]!)) {
      const { name } = blobs.get(m[1]!)!;
      const data = corrupt.get(name) ?? blobs.get(m[1]!)!.data;
      const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
      const from = range ? Number(range[1]) : 0;
      const body = data.subarray(from);
      res.writeHead(range ? 206 : 200, {
        "content-length": String(body.length),
        ...(range ? { "content-range": `bytes ${from}-${data.length - 1}/${data.length}` } : {}),
      });
      const cut = cutAfter.get(name);
      if (cut !== undefined) {
        cutAfter.delete(name);
        res.write(body.subarray(0, cut), () => res.destroy());
        return;
      }
      res.end(body);
      return;
    }
    fail(res, 404, "NotFound");
  };
  // The CDN has its own origin, as the real hub's does, so a token must not follow the redirect.
  const [hubServer, cdnServer] = [createServer(handler), createServer(handler)];
  const listen = async (s: ReturnType<typeof createServer>): Promise<string> => {
    await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  };
  const origin = await listen(hubServer);
  cdnOrigin = await listen(cdnServer);
  const close = (s: ReturnType<typeof createServer>) => new Promise<void>((resolve) => s.close(() => resolve()));
  return { origin, log, cutAfter, corrupt, close: async () => void (await Promise.all([close(hubServer), close(cdnServer)])) };
}
