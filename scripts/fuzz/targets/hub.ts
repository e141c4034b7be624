/**
 * Hugging Face hub answers, as `persona pull OWNER/NAME[:QUANT]` (and `--model hf:…`) read them: a
 * local server stands in for the hub's API listing, its resolve redirect and the CDN, as
 * test/helpers/fake-hub.ts does, and answers with mutated listings (file names, sizes, sha256,
 * commit), resolve headers (ETag, X-Linked-Size, Location, statuses, redirect loops) and CDN
 * transfers (cut, slow, dropped, corrupt, too long, ranges ignored or misreported). After the
 * pull, a second one reads the cache offline. Every file must land inside the cache directory.
 */
import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import path from "node:path";
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { pullModel } from "../../../src/hub/pull.js";
import { delivery, localServer, type PlannedReply, type Request, status } from "../http.js";
import { applySome, interestingNumber, jsonValue, mutateBytes, mutateJson, nastyString } from "../mutate.js";
import { type FuzzCase, type Target, UnexpectedError } from "../target.js";

const REPO = "fuzz/tiny";
const COMMIT = "0123456789abcdef0123456789abcdef01234567";

interface HubSeed {
  files: Record<string, Uint8Array>;
}

interface HubCase {
  ref: string;
  listing: PlannedReply;
  /** Resolve answers by file (the first hop); `location` is resolved against the server's origin. */
  resolve: Record<string, { status: number; headers: Record<string, string>; location: string | null }>;
  /** CDN answers by file, one per attempt (the downloader resumes up to 5 times). */
  cdn: Record<string, { body: Uint8Array; honourRange: boolean; contentRange?: string; status?: number; delivery: PlannedReply["delivery"] }[]>;
  token?: string;
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function listing(files: Record<string, Uint8Array>): { id: string; sha: string; siblings: Record<string, unknown>[] } {
  return {
    id: REPO,
    sha: COMMIT,
    siblings: Object.entries(files).map(([name, data]) => ({ rfilename: name, size: data.length, blobId: sha256(data).slice(0, 40), lfs: { sha256: sha256(data), size: data.length, pointerSize: 134 } })),
  };
}

// Names a pull would pick (they match Q4_K_M), some of them leading out of the snapshot directory.
const NAMES = ["../../../../escape-Q4_K_M.gguf", "../../x-Q4_K_M.gguf", "/abs/x-Q4_K_M.gguf", "a/../../../../b-Q4_K_M.gguf", "..", "sub/./x-Q4_K_M.gguf", "a\\..\\b-Q4_K_M.gguf", "x-Q4_K_M.gguf/", "", "Q4_K_M.gguf", "sub//Q4_K_M.gguf", "tiny-Q4_K_M.gguf", "tiny-q4_k_m.GGUF"];
const HASHES = ["", "../../../escape", "/etc/passwd", "0".repeat(64), "ABCDEF", "a".repeat(10_000), "x/y", ".", "..", "sha256:abc"];

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

function editListing(rng: Rng, doc: ReturnType<typeof listing>): string {
  // Earlier edits may have retyped what later ones edit: those then work on a fresh object.
  const sibling = (): Obj => {
    const all = Array.isArray(doc.siblings) ? doc.siblings.filter(isObj) : [];
    return all.length > 0 ? rng.pick(all) : {};
  };
  const lfsOf = (s: Obj): Obj => (isObj(s.lfs) ? s.lfs : (s.lfs = {}));
  return applySome(rng, 3, [
    () => mutateJson(rng, doc).what,
    () => {
      doc.sha = rng.pick(["../../x", "", "main", "0".repeat(39), "G".repeat(40), COMMIT.toUpperCase(), nastyString(rng)]);
      return `sha ${JSON.stringify(doc.sha).slice(0, 30)}`;
    },
    () => {
      const s = sibling();
      s.rfilename = rng.pick([...NAMES, nastyString(rng)]);
      return `rfilename ${JSON.stringify(s.rfilename).slice(0, 30)}`;
    },
    () => {
      const s = sibling();
      const lfs = lfsOf(s);
      const v = rng.chance(0.7) ? interestingNumber(rng) : jsonValue(rng);
      if (rng.chance(0.5)) lfs.size = v;
      else s.size = v;
      if (rng.chance(0.3)) delete s.lfs;
      return `size ${String(v)}`;
    },
    () => {
      const s = sibling();
      const h = rng.chance(0.8) ? rng.pick(HASHES) : jsonValue(rng);
      const lfs = lfsOf(s);
      const where = rng.chance(0.5) ? "sha256" : rng.chance(0.5) ? "oid" : "blobId";
      if (where === "sha256") lfs.sha256 = h;
      else if (where === "oid") {
        delete lfs.sha256;
        lfs.oid = h;
      } else {
        delete s.lfs;
        s.blobId = h;
      }
      return `hash ${JSON.stringify(h).slice(0, 30)}`;
    },
    () => {
      if (!Array.isArray(doc.siblings)) doc.siblings = [];
      doc.siblings.push(rng.pick([null, 5, "x.gguf", {}, { rfilename: "tiny-Q8_0.gguf", size: 3, blobId: "b" }, { rfilename: 7 }]) as Record<string, unknown>);
      return "odd sibling";
    },
  ]);
}

function resolvePlan(rng: Rng, data: Uint8Array, origin: "cdn"): HubCase["resolve"][string] {
  const headers: Record<string, string> = { "x-repo-commit": COMMIT, "x-linked-etag": `"${sha256(data)}"`, "x-linked-size": String(data.length), etag: `"${sha256(data).slice(0, 40)}"` };
  let location: string | null = `/${origin}/${sha256(data)}`;
  let st = 302;
  if (rng.chance(0.3)) {
    const what = rng.int(4);
    if (what === 0) headers["x-linked-etag"] = rng.pick(['"abc"', "", "W/\"x\"", '"' + "0".repeat(64) + '"', nastyString(rng).replace(/[^\x20-\x7e]/g, "")]);
    else if (what === 1) headers["x-linked-size"] = rng.pick(["-1", "abc", "1e400", "0", "99999999999999999999"]);
    else if (what === 2) location = rng.pick(["", "http://[", "::", "ftp://127.0.0.1/x", "file:///etc/passwd", "data:,abc", "/fuzz/tiny/resolve/x/y", "//", "http://127.0.0.1:1/x", "/cdn/deadbeef"]);
    else st = status(rng);
  }
  return { status: st, headers, location };
}

function cdnPlan(rng: Rng, data: Uint8Array): HubCase["cdn"][string] {
  return Array.from({ length: 1 + rng.int(3) }, () => {
    let body = data;
    if (rng.chance(0.2)) body = mutateBytes(rng, data).bytes;
    const plan: HubCase["cdn"][string][number] = { body, honourRange: rng.chance(0.7), delivery: delivery(rng, ["truncate", "slow", "drop"]) };
    if (rng.chance(0.1)) plan.contentRange = rng.pick(["bytes 0-1/2", "bytes */10", "garbage", "", `bytes ${rng.int(data.length)}-`]);
    if (rng.chance(0.1)) plan.status = status(rng);
    return plan;
  });
}

function route(c: HubCase, origin: string): (req: Request) => PlannedReply {
  const attempts = new Map<string, number>();
  return (req) => {
    const p = req.url.pathname;
    if (p.startsWith("/api/models/")) return c.listing;
    const resolve = /^\/fuzz\/tiny\/resolve\/[^/]+\/(.+)$/.exec(p);
    if (resolve) {
      // A renamed file resolves like the file it was.
      const plan = c.resolve[decodeURIComponent(resolve[1]!)] ?? c.resolve["tiny-Q4_K_M.gguf"];
      if (!plan) return { status: 404, headers: { "x-error-code": "EntryNotFound" }, body: "{}", delivery: "whole" };
      const headers = { ...plan.headers, ...(plan.location !== null ? { location: plan.location.startsWith("/") && !plan.location.startsWith("//") ? `${origin}${plan.location}` : plan.location } : {}) };
      return { status: plan.status, headers, body: "", delivery: "whole" };
    }
    const cdn = /^\/cdn\/(.+)$/.exec(p);
    const file = cdn && Object.keys(c.cdn).find((f) => sha256(c.cdn[f]![0]!.body) === cdn[1] || Object.keys(c.cdn).length === 1);
    if (!file) return { status: 404, headers: {}, body: "", delivery: "whole" };
    const n = attempts.get(file) ?? 0;
    attempts.set(file, n + 1);
    const plans = c.cdn[file]!;
    const plan = plans[Math.min(n, plans.length - 1)]!;
    const range = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ""));
    const from = range && plan.honourRange ? Number(range[1]) : 0;
    const body = plan.body.subarray(from);
    const headers: Record<string, string> = {};
    if (range && plan.honourRange) headers["content-range"] = plan.contentRange ?? `bytes ${from}-${plan.body.length - 1}/${plan.body.length}`;
    return { status: plan.status ?? (range && plan.honourRange ? 206 : 200), headers, body, delivery: plan.delivery };
  };
}

export const hubTarget: Target<HubSeed> = {
  name: "hub",
  description: "Hugging Face hub answers for persona pull: listings (names, sizes, sha256, commit), resolve headers and redirects, CDN transfers",
  async setup() {
    const blob = (n: number, k: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + k) & 0xff);
    return {
      files: {
        "tiny-Q4_K_M.gguf": blob(3000, 1),
        "tiny-Q8_0.gguf": blob(2000, 2),
        "split-Q2_K-00001-of-00002.gguf": blob(1500, 3),
        "split-Q2_K-00002-of-00002.gguf": blob(700, 4),
        "README.md": blob(40, 5),
      },
    };
  },
  async make(rng, seed): Promise<FuzzCase> {
    const doc = listing(seed.files);
    const notes: string[] = [];
    if (rng.chance(0.6)) notes.push(editListing(rng, doc));
    let body: string | Uint8Array = JSON.stringify(doc) ?? "null";
    if (rng.chance(0.1)) {
      body = mutateBytes(rng, Buffer.from(body)).bytes;
      notes.push("listing bytes damaged");
    }
    const listingReply: PlannedReply = { status: rng.chance(0.9) ? 200 : status(rng), headers: { "content-type": "application/json" }, body, delivery: delivery(rng, ["truncate", "slow", "drop"]) };
    const c: HubCase = { ref: rng.pick(["fuzz/tiny:Q4_K_M", "fuzz/tiny:Q2_K", "fuzz/tiny/tiny-Q8_0.gguf", "fuzz/tiny"]), listing: listingReply, resolve: {}, cdn: {} };
    for (const [name, data] of Object.entries(seed.files)) {
      c.resolve[name] = resolvePlan(rng, data, "cdn");
      c.cdn[name] = cdnPlan(rng, data);
    }
    if (rng.chance(0.2)) c.token = rng.pick(["hf_x", "", "a b", nastyString(rng).replace(/[^\x20-\x7e]/g, "")]);
    notes.push(`ref ${c.ref}`, `listing ${listingReply.status}/${listingReply.delivery}`);
    const plan = JSON.stringify(c, (_, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString("base64") : v), 2);
    return { files: { "hub-plan.json": plan }, commands: [], note: notes.join("; "), input: c };
  },
  async run(fc) {
    const c = fc.input as HubCase;
    const server = await localServer();
    server.serve(route(c, server.origin));
    const env = { cacheDir: path.resolve("cache"), endpoint: server.origin, token: c.token, offline: false };
    const check = (files: string[]) => {
      for (const f of files) if (!path.resolve(f).startsWith(env.cacheDir + path.sep)) throw new UnexpectedError(`pull returned ${f}, outside the cache ${env.cacheDir}`);
    };
    const strays = async () => {
      const stray = (await readdir(".")).filter((f) => f !== "cache" && f !== "hub-plan.json");
      if (stray.length > 0) throw new UnexpectedError(`pull wrote outside the cache: ${stray.join(", ")}`);
    };
    try {
      check((await pullModel(c.ref, { env })).files);
      check((await pullModel(c.ref, { env: { ...env, offline: true } })).files);
    } catch (e) {
      await strays();
      throw e;
    }
    await strays();
  },
};
