/**
 * A real HTTP server on 127.0.0.1 inside the fuzz child, for the targets whose input arrives over
 * the network (judge replies, the trait-writing LLM, the Hugging Face hub). Each case installs a
 * route that maps a request to a planned reply; the plan says how the reply is delivered, since
 * the bytes of a reply are not the only thing a server gets wrong: a body cut mid-transfer, a body
 * in slow pieces, a connection dropped before any answer, or one that stalls after the headers.
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Rng } from "../../src/demo/corpus/rng.js";
import { nastyString } from "./mutate.js";

export type Delivery = "whole" | "truncate" | "slow" | "drop" | "stall";

export interface PlannedReply {
  status: number;
  headers: Record<string, string>;
  body: string | Uint8Array;
  delivery: Delivery;
}

export interface Request {
  method: string;
  url: URL;
  headers: IncomingHttpHeaders;
}

export type Route = (req: Request) => PlannedReply;

export interface LocalServer {
  origin: string;
  /** Replaces the route every later request goes to. */
  serve(route: Route): void;
}

let server: Promise<LocalServer> | undefined;

/** The child's one server, started on first use and unref'd so it never keeps a process alive. */
export function localServer(): Promise<LocalServer> {
  server ??= start();
  return server;
}

async function start(): Promise<LocalServer> {
  let route: Route = () => ({ status: 404, headers: {}, body: "", delivery: "whole" });
  const http = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      try {
        const plan = route({ method: req.method ?? "GET", url: new URL(req.url ?? "/", "http://local"), headers: req.headers });
        deliver(res, plan);
      } catch {
        // A header value node refuses to send: the client sees a dropped connection.
        res.destroy();
      }
    });
  });
  http.keepAliveTimeout = 100;
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  http.unref();
  return {
    origin: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    serve(r) {
      route = r;
    },
  };
}

function deliver(res: ServerResponse, plan: PlannedReply): void {
  const body = typeof plan.body === "string" ? Buffer.from(plan.body) : Buffer.from(plan.body);
  if (plan.delivery === "drop") {
    res.socket?.destroy();
    return;
  }
  res.writeHead(plan.status, { "content-length": String(body.length), ...plan.headers });
  const half = body.subarray(0, body.length >> 1);
  switch (plan.delivery) {
    case "whole":
      res.end(body);
      return;
    case "truncate":
      res.write(half, () => res.destroy());
      return;
    case "slow":
      res.write(half);
      setTimeout(() => res.end(body.subarray(half.length)), 5).unref();
      return;
    case "stall":
      // Headers and half the body, then nothing: the client's timeout has to end it.
      res.write(half);
      setTimeout(() => res.destroy(), 5_000).unref();
      return;
  }
}

/** Statuses a server or proxy may answer with, retryable or not. */
export function status(rng: Rng): number {
  return rng.pick([200, 200, 200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 408, 409, 413, 425, 429, 500, 502, 503, 504, 529, 599, 100 + rng.int(500)]);
}

/** Retry-After as servers write it, well and badly. */
export function retryAfter(rng: Rng): string {
  return rng.pick(["0", "1", "0.01", "-1", "1e9", "NaN", "Infinity", "", " ", "abc", "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", new Date(Date.now() + 20).toUTCString(), nastyString(rng).replace(/[^\x20-\x7e]/g, "")]);
}

/** A delivery mode, mostly whole replies. */
export function delivery(rng: Rng, modes: readonly Delivery[] = ["truncate", "slow", "drop", "stall"]): Delivery {
  return rng.chance(0.8) ? "whole" : rng.pick(modes);
}
