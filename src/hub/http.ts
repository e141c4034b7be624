/** Requests to the hub with its token, and the hub's error answers turned into clear errors. */
import { PersonaError } from "../errors.js";

export interface HubRequest {
  endpoint: string;
  token: string | undefined;
  /** Repo id, for messages. */
  repo: string;
}

/** What the hub says about a file on its resolve answer (before the redirect to the CDN). */
export interface LinkedMeta {
  /** `X-Linked-Etag` (the LFS sha256) or `ETag`, unquoted. */
  etag?: string;
  size?: number;
  commit?: string;
}

const MAX_REDIRECTS = 5;

/**
 * GET with the token, following redirects by hand so the hub's own headers (`X-Linked-Etag`,
 * `X-Linked-Size`, `X-Repo-Commit`) are read before the CDN answers; the token goes only to the
 * hub's origin, never to the CDN.
 */
export async function hubFetch(req: HubRequest, url: string, headers: Record<string, string> = {}): Promise<Response & { linked?: LinkedMeta }> {
  const origin = new URL(req.endpoint).origin;
  let target = new URL(url);
  let linked: LinkedMeta | undefined;
  let res: Response;
  for (let hop = 0; ; hop++) {
    const h: Record<string, string> = { "user-agent": "persona-vectors", ...headers };
    if (req.token && target.origin === origin) h.authorization = `Bearer ${req.token}`;
    try {
      res = await fetch(target, { headers: h, redirect: "manual" });
    } catch (e) {
      throw new PersonaError("E_NETWORK", `cannot reach ${target.origin} (${String((e as Error).cause ?? (e as Error).message)}); use --offline to use only the local cache`, {
        cause: e,
      });
    }
    if (hop === 0) linked = linkedMeta(res.headers);
    const location = res.headers.get("location");
    if (res.status < 300 || res.status >= 400 || location === null) break;
    await res.body?.cancel();
    if (hop >= MAX_REDIRECTS) throw new PersonaError("E_NETWORK", `${req.repo}: too many redirects for ${url}`);
    const next = URL.canParse(location, target.href) ? new URL(location, target) : undefined;
    if (next?.protocol !== "http:" && next?.protocol !== "https:") {
      throw new PersonaError("E_NETWORK", `${req.repo}: the hub redirected ${new URL(url).pathname} to ${JSON.stringify(location).slice(0, 120)}, not an http(s) URL`);
    }
    target = next;
  }
  if (res.ok) return Object.assign(res, { linked });
  await res.body?.cancel();
  const code = res.headers.get("x-error-code");
  const hint = req.token ? "" : " (no token: set HF_TOKEN)";
  if (res.status === 401 || res.status === 403 || code === "GatedRepo") {
    throw new PersonaError(
      "E_AUTH",
      code === "GatedRepo" || res.status === 403
        ? `${req.repo} is gated: accept its terms on the hub's model page, then use a token that may read it${hint}`
        : `${req.repo}: the hub refused access (HTTP ${res.status})${hint}; it may be private or gated, or not exist`,
    );
  }
  if (res.status === 404) {
    const what = code === "RevisionNotFound" ? "revision" : code === "EntryNotFound" ? "file" : "repo";
    throw new PersonaError("E_NOT_FOUND", `${req.repo}: ${what} not found on ${req.endpoint} (${new URL(url).pathname})`);
  }
  throw new PersonaError("E_NETWORK", `${req.repo}: the hub answered HTTP ${res.status} for ${new URL(url).pathname}`);
}

function linkedMeta(h: Headers): LinkedMeta {
  const out: LinkedMeta = {};
  const etag = h.get("x-linked-etag") ?? h.get("etag");
  if (etag) out.etag = etag.replace(/^W\//, "").replace(/"/g, "");
  const size = Number(h.get("x-linked-size") ?? NaN);
  if (Number.isSafeInteger(size)) out.size = size;
  const commit = h.get("x-repo-commit");
  if (commit) out.commit = commit;
  return out;
}
