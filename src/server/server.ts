/**
 * `persona serve` as a library call: loads the engine, the model and the served traits, starts
 * the HTTP server, and shuts down gracefully (stop accepting, let in-flight requests finish for
 * the grace period, cancel the rest, free the engine).
 */
import type { AddressInfo } from "node:net";
import { availableParallelism, loadavg } from "node:os";
import { serve, type ServerType } from "@hono/node-server";
import { defaultThreads, Engine } from "../engine/Engine.js";
import type { GpuChoice } from "../engine/ffi/discover.js";
import type { LoraAdapter } from "../engine/lora.js";
import { PersonaError } from "../errors.js";
import { resolveModelRef } from "../hub/resolve.js";
import { createApp, type ServerState } from "./app.js";
import { LoopBackend } from "./backend.js";
import { checkBind, type ServerConfig } from "./config.js";
import { ServerMetrics } from "./metrics.js";
import { loadServedTraits, PersonaService } from "./persona.js";
import { RecentLog } from "./recent.js";

export interface RunningServer {
  /** e.g. http://127.0.0.1:8080 */
  url: string;
  port: number;
  state: ServerState;
  /** Graceful shutdown; idempotent. Resolves once the engine is freed. */
  close(): Promise<void>;
}

/**
 * Decoding threads when neither the config nor PERSONA_THREADS says: the free cores less one, since
 * the HTTP thread runs next to ggml's spinning threads. On the idle 2-core dev box at 8 streaming
 * clients, 2 threads served 0.60x the engine's own batched tok/s and 1 thread 0.89x
 * (`npm run bench:serve -- --threads 2` vs `--threads 1`).
 */
function serverThreads(): number | undefined {
  if (Number(process.env.PERSONA_THREADS)) return undefined;
  return Math.max(1, defaultThreads(availableParallelism(), loadavg()[0]!) - 1);
}

export async function startServer(config: ServerConfig, opts: { gpu?: GpuChoice; verbose?: boolean; modelPath?: string; loras?: LoraAdapter[] } = {}): Promise<RunningServer> {
  checkBind(config);
  const engine = await Engine.create({ verbose: opts.verbose ?? false, threads: config.threads ?? serverThreads(), gpu: opts.gpu });
  let http: ServerType | undefined;
  try {
    const modelPath = opts.modelPath ?? (await resolveModelRef(config.model));
    const model = await engine.loadModel(modelPath, opts.loras?.length ? { loras: opts.loras } : {});
    const traits = await loadServedTraits(model, config.traits, config.layers);
    const persona = new PersonaService(model, traits, {
      monitor: config.monitor ?? [...traits.keys()],
      thresholds: config.thresholds,
      action: config.action,
      steer: config.steer,
    });
    const state: ServerState = {
      config,
      model,
      modelId: model.info.name,
      backend: await LoopBackend.open(model, { slots: config.parallel, ctxPerSlot: config.ctx }),
      persona,
      metrics: new ServerMetrics(),
      recent: new RecentLog(config.recent),
      shutdown: new AbortController(),
      draining: false,
      active: 0,
      avgSeconds: 0,
    };
    const app = createApp(state);
    const listening = new Promise<AddressInfo>((resolve, reject) => {
      http = serve({ fetch: app.fetch, hostname: config.host, port: config.port }, resolve);
      http.once("error", (e: NodeJS.ErrnoException) => reject(new PersonaError("E_IO", `cannot listen on ${config.host}:${config.port}: ${e.code ?? e.message}`)));
    });
    const address = await listening;
    const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
    let closing: Promise<void> | undefined;
    const close = () =>
      (closing ??= (async () => {
        state.draining = true;
        const stopped = new Promise<void>((resolve) => http!.close(() => resolve()));
        // Idle keep-alive sockets would hold close() open; busy ones end with their response.
        (http as { closeIdleConnections?: () => void }).closeIdleConnections?.();
        await waitIdle(state, config.shutdownGrace * 1000);
        state.shutdown.abort();
        await waitIdle(state, 5000);
        (http as { closeAllConnections?: () => void }).closeAllConnections?.();
        await stopped;
        await state.backend.dispose();
        await engine.dispose();
      })());
    return { url: `http://${host}:${address.port}`, port: address.port, state, close };
  } catch (e) {
    http?.close();
    await engine.dispose();
    throw e;
  }
}

async function waitIdle(state: ServerState, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (state.active > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
}
